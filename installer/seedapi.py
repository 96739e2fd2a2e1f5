"""The answer file of a node that PXE-booted to install: asked of the seed, never read
from the boot network in clear.

``rackforge rack up`` put the node in state ``installing``; the boot service's
install decision gave it ``rackforge.node=ID rackforge.join=https://SEED:PORT
rackforge.ca=sha256:PIN`` (never a token: the command line travels in clear).
Here the installer:

1. fetches the CA the join service presents and checks it against the pin,
   then opens a connection verified against that CA to a certificate issued
   to a join service (``cluster/joinclient.py``'s discipline): nothing is sent
   to anyone else;
2. ``POST /v1/install`` with the node id and this machine's identity (its NICs'
   permanent MACs and the DMI serial, which the seed compares with what the
   node's BMC reported at enrolment): the answer file, with a one-use join
   token bound to this node, and a report secret;
3. after the write, ``POST /v1/install/report`` (installed, or failed with
   the reason), which moves the node's state; the seed then points its BMC at
   the disk.

A seed that does not answer or is busy (503, 429, no route yet) is asked
again for :data:`PATIENCE` seconds; a refusal (403: not a node waiting for
its install here) is final and said in one line.
"""

import logging
import time

import yaml

from rackforge import errors
from rackforge.cluster import joinclient
from rackforge.installer.sources import Found

LOG = logging.getLogger(__name__)

INSTALL, REPORT = "/v1/install", "/v1/install/report"
PATIENCE = 600
MAX_ANSWER = 64 * 1024


class SeedRefused(errors.ConfigError):
    message = ("the seed {endpoint} refused this machine's install ({detail}); enroll it "
               "with 'rackforge rack up' on the seed, then power it on again")


class SeedUnavailable(errors.RackforgeError):
    retryable = True
    message = "the seed {endpoint} did not answer the install request for {seconds} s: {detail}"


def identity(inventory):
    """``(MACs, serial)`` this machine shows the seed: its physical NICs' permanent
    MACs (lower case) and the DMI serial number."""
    macs = sorted({i.mac.lower() for i in inventory.interfaces
                   if i.kind == "physical" and i.mac})
    return macs, (inventory.system_vendor.serial_number or None)


def _ask(endpoint, pin, path, body, patience, timeout=30, clock=time.monotonic,
         sleep=time.sleep):
    """The seed's 200 answer (``cluster/joinclient.py``'s pinned POST, asked again while
    the seed is busy or silent); a refusal is :class:`SeedRefused` at once."""
    return joinclient.ask_pinned(
        endpoint, pin, path, body, patience, timeout=timeout, clock=clock, sleep=sleep,
        max_answer=MAX_ANSWER,
        refused=lambda detail: SeedRefused(endpoint=endpoint, detail=detail),
        unavailable=lambda detail: SeedUnavailable(endpoint=endpoint, seconds=patience,
                                                   detail=detail),
        on_retry=lambda detail, pause: LOG.info("the seed %s: %s; asking again in %.0f s",
                                                endpoint, detail, pause))


def fetch(args, inventory=None, patience=PATIENCE, **kw):
    """The :class:`~rackforge.installer.sources.Found` answer for this PXE install, with
    a ``report(result, reason)`` callable attached."""
    from rackforge.firstboot import inventory as inventory_mod

    endpoint, pin, node = args["join"], args.get("ca"), args["node"]
    if not pin:
        raise SeedRefused(endpoint=endpoint, detail="no rackforge.ca pin on the kernel "
                          "command line, so the seed cannot be trusted")
    macs, serial = identity(inventory or inventory_mod.collect())
    answer = _ask(endpoint, pin, INSTALL, {"node": node, "macs": macs, "serial": serial},
                  patience, **kw)
    secret = answer.get("report") if isinstance(answer, dict) else None
    if not isinstance(answer.get("answer"), dict) or not secret:
        raise SeedRefused(endpoint=endpoint, detail="its answer has no answer file")

    def report(result, reason=""):
        _ask(endpoint, pin, REPORT, {"node": node, "report": secret, "result": result,
                                     "reason": errors.printable(reason)[:200]},
             min(patience, 300), **kw)

    return Found(yaml.safe_dump(answer["answer"], sort_keys=False),
                 "the seed (%s, node %s)" % (endpoint, node), report=report)
