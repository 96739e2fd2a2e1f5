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

import http.client
import json
import logging
import socket
import time

import yaml

from rackforge import errors
from rackforge.cluster import ca as ca_mod
from rackforge.cluster import joinclient
from rackforge.cluster.join import JoinError
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


def _post(endpoint, pin, path, body, timeout):
    """``(status, JSON answer)`` of one POST to the pinned join service."""
    ca_pem = joinclient.fetch_ca(endpoint, timeout=timeout)
    ca_mod.check_pin(ca_pem, pin, endpoint=endpoint)
    conn = joinclient.connect_checked(endpoint, ca_pem, timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read(MAX_ANSWER + 1)
    except (OSError, http.client.HTTPException, socket.timeout) as exc:
        raise JoinError(endpoint=endpoint, detail=str(exc) or exc.__class__.__name__) \
            from None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        raise JoinError(endpoint=endpoint, detail="answer %d is not JSON" % resp.status) \
            from None


def _ask(endpoint, pin, path, body, patience, timeout=30, clock=time.monotonic,
         sleep=time.sleep):
    deadline, pause, last = clock() + patience, 2.0, ""
    while True:
        try:
            status, answer = _post(endpoint, pin, path, body, timeout)
            if status == 200:
                return answer
            detail = (answer.get("error") if isinstance(answer, dict) else None) or \
                "HTTP %d" % status
            if status in (400, 403, 404, 409):
                raise SeedRefused(endpoint=endpoint, detail=detail)
            last = detail
        except ca_mod.CAPinMismatch:
            raise
        except JoinError as exc:
            last = str(exc)
        if clock() + pause > deadline:
            raise SeedUnavailable(endpoint=endpoint, seconds=patience, detail=last[:300])
        LOG.info("the seed %s: %s; asking again in %.0f s", endpoint, last, pause)
        sleep(pause)
        pause = min(pause * 2, 30.0)


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
