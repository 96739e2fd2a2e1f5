"""A node's life in the rack: its states, the allowed moves, who makes each, and what it boots.

In the manner of Ironic's states: one table, read by every writer.  A node
is in exactly one state; every change is a compare-and-set from the state
the writer saw to the next one (:meth:`rackforge.registry.NodeRegistry.transition`),
and only the component named for that move may make it.  What a node boots
when it asks the seed over the network follows from its state alone
(:data:`BOOT`, read by ``pxe/bootscript.py``)::

    (new) --operator--> enrolled --live--> live --operator--> installing
    (new) --live------> discovered                            |   installer
                                                              v
    (new) --join------> joining <--join-- installed <----------+
                           | firstboot
                           v
                        active <--operator--> maintenance

    installing, joining, active --...--> failed --operator--> installing

- ``discovered``: a machine nobody enrolled booted the live appliance, which
  recorded its inventory; it never joins on its own.
- ``live``: a node runs the live appliance (network or ISO), not installed.
- ``installing``: the installer is to write the appliance to its disk; the
  only state whose network boot is the installer.
- ``installed``: the appliance is on its disk; from here the network boot is
  always the local disk, so an installed node never loops back.
- ``joining``: booted from its disk, first boot is joining it; a reboot in
  the middle boots the disk again and the join resumes.
"""

from dataclasses import dataclass

from rackforge import errors

# the components that move nodes
OPERATOR = "operator"       # rackforge bmc enroll, rack up, node ... commands
LIVE = "live"               # the live appliance's discovery
INSTALLER = "installer"
JOIN = "join"               # the join service on a controller
FIRSTBOOT = "firstboot"
NODEAGENT = "nodeagent"

# what a network boot of the node does (pxe/bootscript.py)
DISCOVER, INSTALL, LOCAL = "discover", "install", "local"


@dataclass(frozen=True)
class State:
    name: str
    boot: str
    meaning: str


_STATES = (
    State("discovered", DISCOVER, "a machine nobody enrolled, inventoried by the live "
          "appliance; it never joins on its own"),
    State("enrolled", DISCOVER, "its BMC is enrolled; nothing installed yet"),
    State("live", DISCOVER, "runs the live appliance, not installed"),
    State("installing", INSTALL, "the installer writes the appliance to its disk"),
    State("installed", LOCAL, "the appliance is on its disk; it boots from it"),
    State("joining", LOCAL, "first boot from its disk is joining it to the cluster"),
    State("active", LOCAL, "joined; the node agent runs its roles"),
    State("maintenance", LOCAL, "out of service by the operator's hand; keeps its disk"),
    State("failed", DISCOVER, "an install or a join failed; the reason is in the record"),
)
STATES = {s.name: s for s in _STATES}
BOOT = {s.name: s.boot for s in _STATES}

#: (from, to) -> the component that makes the move; from None: a new record
TRANSITIONS = {
    (None, "enrolled"): OPERATOR,
    (None, "discovered"): LIVE,
    (None, "joining"): JOIN,
    ("discovered", "enrolled"): OPERATOR,
    ("enrolled", "live"): LIVE,
    ("discovered", "installing"): OPERATOR,
    ("enrolled", "installing"): OPERATOR,
    ("live", "installing"): OPERATOR,
    ("failed", "installing"): OPERATOR,
    ("maintenance", "installing"): OPERATOR,
    ("installing", "installed"): INSTALLER,
    ("installing", "failed"): INSTALLER,
    ("installed", "joining"): JOIN,
    ("joining", "active"): FIRSTBOOT,
    ("joining", "failed"): FIRSTBOOT,
    ("failed", "joining"): FIRSTBOOT,
    ("active", "maintenance"): OPERATOR,
    ("maintenance", "active"): OPERATOR,
    ("active", "failed"): NODEAGENT,
    ("failed", "active"): NODEAGENT,
}


class InvalidTransition(errors.RackforgeError):
    message = ("node {node} cannot go from {frm} to {to}{by}: {why}; "
               "'rackforge node show {node}' shows where it is")
    exit_code = 2


def check(node, frm, to, by):
    """Raise :class:`InvalidTransition` unless ``by`` may move ``node`` from ``frm`` to ``to``."""
    if to not in STATES:
        raise InvalidTransition(node=node, frm=frm or "(new)", to=to, by="",
                                why="'%s' is not a state (%s)" % (to, ", ".join(STATES)))
    allowed = TRANSITIONS.get((frm, to))
    if allowed is None:
        nexts = sorted(t for (f, t) in TRANSITIONS if f == frm)
        raise InvalidTransition(node=node, frm=frm or "(new)", to=to, by="",
                                why="from %s it can go to %s" % (frm or "(new)",
                                                                 ", ".join(nexts) or "nothing"))
    if allowed != by:
        raise InvalidTransition(node=node, frm=frm or "(new)", to=to, by=" by %s" % by,
                                why="only the %s makes that move" % allowed)


def boot(state):
    """What a node in ``state`` boots over the network: discover, install or local."""
    return BOOT[state]
