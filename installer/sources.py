"""Where the installer finds its answer file, in this order (the first found wins, and
the log says which):

1. the kernel command line: ``rackforge.answer=https://HOST[:PORT]/PATH`` with
   ``rackforge.answer_pin=SHA256`` (hex of the server certificate's DER); plain
   HTTP or a missing pin is refused, a certificate that does not match the pin
   is refused before the request is sent;
2. a partition labelled ``RF-ANSWER`` (also ``rf-answer``), mounted read-only,
   holding ``answer.yaml`` at its root (a USB stick, or a small partition next
   to the installer's own medium);
3. the installer's own medium: ``/rackforge/answer.yaml`` on the ISO/USB stick
   (``/run/live/medium``);
4. the seed, for a node that PXE-booted to install (``rackforge.join`` and
   ``rackforge.ca`` on its command line): :mod:`rackforge.installer.seedapi`.

None found: the installer asks (the TUI).  A source that is present but
broken (unreachable URL, unreadable partition) is an error, not a fall
through to the next one: an operator who gave an answer file meant it.

The block device an answer came from is reported, so the disk choice can leave
it out the way it leaves out the boot medium.
"""

import hashlib
import http.client
import logging
import os
import socket
import ssl
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rackforge import errors, kernelargs

LOG = logging.getLogger(__name__)

LABELS = ("RF-ANSWER", "rf-answer")     # not RACKFORGE: the ISO's own volume label
FILE_NAME = "answer.yaml"
MEDIUM = Path("/run/live/medium")
ON_MEDIUM = Path("rackforge") / FILE_NAME
MAX_BYTES = 64 * 1024


class AnswerSourceError(errors.ConfigError):
    message = "answer file from {source}: {problem}"


@dataclass
class Found:
    text: str
    source: str                     # where, for the log and the summary
    device: Optional[str] = None    # the block device it was read from, if any
    report: Optional[object] = None     # the seed's: report(result, reason) after the write


def cmdline_args(text=None):
    """The ``rackforge.*`` kernel arguments of this boot."""
    if text is None:
        text = Path("/proc/cmdline").read_text()
    return kernelargs.parse(text)


# -- 1: a URL on the kernel command line --------------------------------------------------
def from_url(url, pin, timeout=20):
    where = "the kernel command line's rackforge.answer"
    u = urllib.parse.urlsplit(url)
    if u.scheme != "https" or not u.hostname:
        raise AnswerSourceError(source=where, problem="the URL must be https://HOST/PATH "
                                "(with rackforge.answer_pin=SHA256 of its certificate)")
    pin = (pin or "").lower().removeprefix("sha256:")
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise AnswerSourceError(source=where, problem="rackforge.answer_pin must be the 64 hex "
                                "digits of the SHA-256 of the server certificate (DER)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE       # trust comes from the pin, checked before sending
    conn = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout,
                                       context=context)
    try:
        conn.connect()
        seen = hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest()
        if seen != pin:
            raise AnswerSourceError(source=where, problem="the server's certificate does not "
                                    "match rackforge.answer_pin; nothing was requested")
        conn.request("GET", u.path + ("?" + u.query if u.query else ""))
        resp = conn.getresponse()
        body = resp.read(MAX_BYTES + 1)
    except (OSError, socket.timeout, http.client.HTTPException) as exc:
        raise AnswerSourceError(source=where, problem="cannot fetch it (%s); check the "
                                "address and the network" % exc) from None
    finally:
        conn.close()
    if resp.status != 200:
        raise AnswerSourceError(source=where, problem="the server answered %d" % resp.status)
    return Found(_text(body, where), "%s (certificate pinned)" % url)


def _text(data, where):
    if len(data) > MAX_BYTES:
        raise AnswerSourceError(source=where, problem="larger than %d KiB" % (MAX_BYTES >> 10))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AnswerSourceError(source=where, problem="not UTF-8 text") from None


# -- 2: a labelled partition --------------------------------------------------------------
def labelled_device(run=subprocess.run):
    """The block device labelled RF-ANSWER (or rf-answer), if one is attached."""
    for label in LABELS:
        res = run(["blkid", "-L", label], capture_output=True, text=True)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip().splitlines()[0]
    return None


def from_partition(device, run=subprocess.run):
    where = "the partition labelled %s (%s)" % (LABELS[0], device)
    with tempfile.TemporaryDirectory(prefix="rf-answer-") as mnt:
        res = run(["mount", "-o", "ro,nosuid,nodev,noexec", device, mnt],
                  capture_output=True, text=True)
        if res.returncode != 0:
            raise AnswerSourceError(source=where, problem="cannot mount it (%s)"
                                    % (res.stderr.strip() or "exit %d" % res.returncode))
        try:
            path = Path(mnt) / FILE_NAME
            if not path.is_file():
                raise AnswerSourceError(source=where, problem="it has no %s at its root"
                                        % FILE_NAME)
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        finally:
            run(["umount", mnt], capture_output=True, text=True)
    return Found(_text(data, where), where, device=device)


# -- 3: the installer's own medium --------------------------------------------------------
def from_medium(medium=MEDIUM):
    path = Path(medium) / ON_MEDIUM
    if not path.is_file():
        return None
    where = "the installation medium (/%s)" % ON_MEDIUM
    with open(path, "rb") as f:
        return Found(_text(f.read(MAX_BYTES + 1), where), where)


def find(cmdline=None, run=subprocess.run, medium=MEDIUM, seed=None):
    """The first answer file found, or None (then the installer asks)."""
    args = cmdline_args(cmdline)
    if args.get("answer"):
        return from_url(args["answer"], args.get("answer_pin"))
    device = labelled_device(run)
    if device:
        return from_partition(device, run)
    found = from_medium(medium)
    if found:
        return found
    if seed is not None and args.get("join") and args.get("node"):
        return seed(args)
    return None


def parent_disk(device):
    """/dev/sdc for /dev/sdc1 (the whole disk a partition is on), else ``device``."""
    name = os.path.basename(os.path.realpath(device))
    link = Path("/sys/class/block", name)
    if (link / "partition").is_file():
        return "/dev/" + link.resolve().parent.name
    return device
