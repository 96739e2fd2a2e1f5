"""A machine booted into discovery reports itself to the seed, and does nothing else.

An unknown MAC (and a ``discovered``, ``enrolled``, ``live`` or ``failed``
node) PXE-boots the live appliance with ``rackforge.mode=discover``
(``pxe/bootscript.py``), and with ``rackforge.join=https://SEED:PORT`` and
``rackforge.ca=sha256:PIN`` when the seed has a cluster record.  There
``rackforge-discover.service`` runs ``rackforge firstboot discover``, which:

1. collects this machine's inventory (:mod:`.inventory`);
2. fetches the CA the join service presents and checks it against the pin,
   then opens a connection verified against that CA to a certificate issued
   to a join service (``cluster/joinclient.py``): nothing is sent otherwise;
3. ``POST /v1/discover`` with its NICs' permanent MACs, the DMI serial and the
   inventory (``bringup/discoverapi.py``): the seed records it as a node in
   state ``discovered``, or answers with the node that already holds one of
   its MACs, and writes nothing;
4. says so in one line on the console and on the console banner.

A seed that does not answer or is busy (no route yet, 503 "discovery full",
429) is asked again (2 s doubling to 30 s) for :data:`PATIENCE` seconds, then
the command fails and its unit starts it again; a refusal is final.  Nothing
here joins, holds a token or installs: the machine waits for an operator to
enroll its BMC (``rackforge rack up``), which adopts the record.
"""

import re

from rackforge import errors, states
from rackforge.cluster import joinclient
from rackforge.firstboot import bootstrap

DISCOVER = "/v1/discover"
PATIENCE = 1800
_NODE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


class DiscoverRefused(errors.ConfigError):
    message = "the seed {endpoint} refused to record this machine: {detail}"


class DiscoverUnavailable(errors.RackforgeError):
    message = ("the seed {endpoint} did not record this machine in {seconds} s: {detail}; "
               "rackforge-discover.service asks again")
    retryable = True


class NotRecorded(errors.RackforgeError):
    """A discovery boot without the seed's address and pin: nothing can be sent."""
    message = ("not recorded: this discovery boot's kernel command line has no "
               "rackforge.join and rackforge.ca (the seed had no cluster record when it "
               "booted); boot it again once the seed runs the cluster")


def identity(inventory):
    """``(MACs, serial)`` this machine shows the seed: its physical NICs' permanent MACs
    (lower case) and the DMI serial number (the install API's identity too)."""
    macs = sorted({i.mac.lower() for i in inventory.interfaces
                   if i.kind == "physical" and i.mac})
    return macs, (inventory.system_vendor.serial_number or None)


def line_for(node, state):
    """The console's line for the seed's answer."""
    if state == "discovered":
        return ("discovered: recorded as node %s; enroll its BMC with 'rackforge rack up' to "
                "install it" % node)
    return ("discovered: the seed knows this machine as node %s (%s), nothing recorded again; "
            "'rackforge rack status' on the seed shows it" % (node, state))


def run(cmdline=None, inventory=None, patience=PATIENCE, on_retry=None, **kw):
    """Report this machine to the seed; ``(node id, state)`` of the answer, or None when
    this is not a discovery boot.

    :param cmdline: the kernel command line (default: this boot's)
    :param on_retry: ``(detail, pause)`` before each pause while the seed is asked again
    :raises NotRecorded: no ``rackforge.join``/``rackforge.ca`` on the command line.
    :raises DiscoverRefused, ca.CAPinMismatch: final; nothing more to do on this boot.
    :raises DiscoverUnavailable: the seed did not answer within ``patience``.
    """
    from rackforge import kernelargs
    from rackforge.firstboot import inventory as inventory_mod

    args = kernelargs.parse(bootstrap.read_cmdline() if cmdline is None else cmdline)
    if args.get("mode") != states.DISCOVER:
        return None
    endpoint, pin = args.get("join"), args.get("ca")
    if not endpoint or not pin:
        raise NotRecorded()
    inv = inventory or inventory_mod.collect()
    macs, serial = identity(inv)
    if not macs:
        raise DiscoverRefused(endpoint=endpoint, detail="this machine has no NIC with a MAC "
                              "to be known by; nothing was sent")
    body = {"macs": macs, "serial": serial, "inventory": inv.to_dict()}
    answer = joinclient.ask_pinned(
        endpoint, pin, DISCOVER, body, patience, on_retry=on_retry,
        refused=lambda detail: DiscoverRefused(endpoint=endpoint, detail=detail),
        unavailable=lambda detail: DiscoverUnavailable(endpoint=endpoint, seconds=patience,
                                                       detail=detail), **kw)
    node = answer.get("node") if isinstance(answer, dict) else None
    state = answer.get("state") if isinstance(answer, dict) else None
    if not isinstance(node, str) or not _NODE_ID.fullmatch(node) or state not in states.STATES:
        raise DiscoverRefused(endpoint=endpoint, detail="its answer is not a node id and a "
                              "state")
    return node, state
