"""A change of the management network from the console, with commit-confirm.

A wrong address or VLAN typed at the console must not cut the node off for good.
So a change is applied at once but kept only when the operator confirms it
from the console within ``confirm_within`` seconds, which proves the console
still works after it; otherwise the node goes back to the network it had:

1. :meth:`NetworkChange.propose` checks the new spec (``firstboot/netspec.py``:
   one line on a bad field), writes the pending record
   (``<state>/network-pending.json``: the spec kept until now, the new one and
   the deadline) *before* anything changes, then applies the new spec with
   ``firstboot/network.py`` (which checks the next hop and restores the links
   itself when that check fails) and arms the timer;
2. :meth:`confirm` keeps it: systemd-networkd's files and the spec file
   (``firstboot/persist.py``), then the pending record goes;
3. the timer, or :meth:`rollback`, applies the spec kept before and removes
   the pending record;
4. an agent that starts and finds a pending record (it was killed or the node
   lost power during the wait) rolls back at once (:meth:`resume`); a node
   that reboots comes up on networkd's files, which only a confirmation writes;
   a rollback that fails is tried again every :data:`RETRY` seconds.

Applying a spec in place of another first removes the links either one creates
(``firstboot/network.py`` builds a bond, VLAN or bridge only where none is) and
stops the old spec's DHCP client.

Every step is one line in the journal naming what changed.  One change at a
time: a second proposal while one waits is refused.
"""

import json
import logging
import threading
import time

from rackforge import errors, paths
from rackforge.fileutil import atomic_write, make_dirs

LOG = logging.getLogger(__name__)
CONFIRM_DEFAULT = 120
CONFIRM_MIN, CONFIRM_MAX = 30, 900
RETRY = 30              # a rollback (or a confirmation's write) that failed is tried again


class NetworkChangeRefused(errors.ConfigError):
    message = "network change refused: {why}"


class NetworkChangeFailed(errors.RackforgeError):
    message = "network change not applied: {why}; the network is as it was"


def pending_file():
    return paths.state_dir() / "network-pending.json"


def _default_apply(mapping, replacing):
    """Apply ``mapping`` in place of ``replacing``: the links either spec creates (a
    bond, VLAN, bridge) are removed first, so the target builds from scratch (network.apply
    refuses a link that exists), and a DHCP client of the old spec is stopped."""
    from pyroute2 import IPRoute

    from rackforge.firstboot import netspec, network
    target, old = netspec.parse(mapping), netspec.parse(replacing)
    if old.dhcp and (not target.dhcp or target.interface != old.interface):
        network.stop_dhcp(old.interface)
    with IPRoute() as ipr:
        for name in reversed(list(dict.fromkeys(old.created() + target.created()))):
            found = ipr.link_lookup(ifname=name)
            if found:
                ipr.link("del", index=found[0])
    network.apply(target)


def _default_keep(mapping):
    from rackforge import systemd
    from rackforge.firstboot import netspec, persist
    persist.write(netspec.parse(mapping))
    # networkd, when it runs, manages these links from now on by the new files
    systemd.systemctl("try-reload-or-restart", "systemd-networkd.service")


def _default_current():
    from rackforge.firstboot import persist
    return persist.load()


def describe(mapping):
    """One short line for the journal and the console: interface, address, gateway, VLAN."""
    if not mapping:
        return "none"
    words = ["%s %s" % (mapping.get("interface"), mapping.get("address"))]
    if mapping.get("gateway"):
        words.append("gateway %s" % mapping["gateway"])
    if mapping.get("vlan"):
        words.append("VLAN %s" % mapping["vlan"].get("id"))
    return ", ".join(words)


class NetworkChange:
    """The commit-confirm of the management network; thread-safe (the local API's
    threads and the timer's)."""

    def __init__(self, apply=_default_apply, keep=_default_keep, current=_default_current,
                 clock=time.time, timer=threading.Timer):
        self.apply, self.keep, self.current = apply, keep, current
        self.clock, self.timer = clock, timer
        self._lock = threading.RLock()
        self._timer = None

    # -- what is pending --------------------------------------------------------
    def pending(self):
        try:
            return json.loads(pending_file().read_text())
        except FileNotFoundError:
            return None

    def state(self):
        """``GET /v1/network``: the kept spec, and the pending change with its time left."""
        with self._lock:
            pending = self.pending()
            doc = {"current": self.current(), "pending": None}
            if pending is not None:
                doc["pending"] = {"spec": pending["spec"], "previous": pending["previous"],
                                  "deadline": pending["deadline"],
                                  "left_s": max(0.0, pending["deadline"] - self.clock())}
            return doc

    # -- the three moves --------------------------------------------------------
    def propose(self, body):
        """``POST /v1/network`` ``{"spec": {...}, "confirm_within": SECONDS}``."""
        from rackforge.firstboot import netspec
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise NetworkChangeRefused(why="the body must be {\"spec\": {...}}")
        within = body.get("confirm_within", CONFIRM_DEFAULT)
        if isinstance(within, bool) or not isinstance(within, (int, float)) \
                or not CONFIRM_MIN <= within <= CONFIRM_MAX:
            raise NetworkChangeRefused(why="confirm_within must be %d to %d seconds"
                                       % (CONFIRM_MIN, CONFIRM_MAX))
        spec = netspec.to_mapping(netspec.parse(body["spec"]))   # one line on a bad field
        with self._lock:
            if self.pending() is not None:
                raise NetworkChangeRefused(why="another change waits for its confirmation; "
                                               "confirm it or roll it back first")
            previous = self.current()
            if previous is None:
                raise NetworkChangeRefused(why="this node's management network is not kept "
                                               "yet (first boot has not finished)")
            if spec == previous:
                raise NetworkChangeRefused(why="it is the network this node has already")
            record = {"spec": spec, "previous": previous,
                      "deadline": self.clock() + within, "proposed": self.clock()}
            make_dirs(pending_file().parent, 0o700)
            atomic_write(pending_file(), json.dumps(record) + "\n", mode=0o600)  # intent
            LOG.warning("console: management network changing from %s to %s; rolled back "
                        "unless confirmed within %d s", describe(previous), describe(spec),
                        within)
            try:
                self.apply(spec, previous)
            except Exception as exc:    # noqa: BLE001 - netlink, a check: back, one line
                self._restore(previous, spec, "the new network failed its check")
                raise NetworkChangeFailed(why=str(exc) or type(exc).__name__) from None
            # the deadline the console shows, however long the apply and its check took
            self._arm(max(0.0, record["deadline"] - self.clock()))
            return self.state()

    def confirm(self, body=None):
        """``POST /v1/network/confirm``: keep the pending change."""
        with self._lock:
            pending = self.pending()
            if pending is None:
                raise NetworkChangeRefused(why="no change waits for a confirmation")
            self._cancel()
            try:
                self.keep(pending["spec"])
            except Exception:
                # still pending: the timer runs again for what was left (at least RETRY)
                self._arm(max(RETRY, pending["deadline"] - self.clock()))
                raise
            pending_file().unlink()
            LOG.warning("console: management network change confirmed: %s is kept",
                        describe(pending["spec"]))
            return self.state()

    def rollback(self, body=None, why="rolled back from the console"):
        """``POST /v1/network/rollback``, the timer and :meth:`resume`: back to the kept spec."""
        with self._lock:
            pending = self.pending()
            if pending is None:
                if body is not None:
                    raise NetworkChangeRefused(why="no change waits for a confirmation")
                return self.state()
            self._cancel()
            self._restore(pending["previous"], pending["spec"], why)
            return self.state()

    def resume(self):
        """At the agent's start: a change nobody confirmed before it stopped goes back."""
        if self.pending() is not None:
            self.rollback(why="the node agent restarted before the change was confirmed")

    # -- inside ------------------------------------------------------------------
    def _restore(self, previous, current, why):
        try:
            self.apply(previous, current)
        except Exception as exc:
            # the record stays: tried again in RETRY s, and at the agent's next start
            LOG.error("console: management network NOT restored to %s (%s): %s; tried "
                      "again in %d s", describe(previous), why, exc, RETRY)
            self._arm(RETRY)
            if isinstance(exc, errors.RackforgeError):
                raise
            raise NetworkChangeFailed(why="the rollback failed: %s" % exc) from None
        try:
            pending_file().unlink()
        except FileNotFoundError:
            pass
        LOG.warning("console: management network back to %s: %s", describe(previous), why)

    def _arm(self, within):
        self._cancel()
        self._timer = self.timer(within, self._expired)
        self._timer.daemon = True
        self._timer.start()

    def _cancel(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self):
        try:
            self.rollback(why="not confirmed in time")
        except errors.RackforgeError:
            pass                        # said in the journal; tried again in RETRY s
