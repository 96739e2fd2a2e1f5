"""The console's password gate: the actions that change the node ask for root's password.

Anyone at the node's screen may read its status; changing the node (its network,
its BMC, restarting services, rejoining, a factory reset, a shell) needs the
password of root, checked against ``/etc/shadow`` with the system's own
``crypt(3)`` (libcrypt, which every Debian system has: yescrypt, SHA-512 and the
rest without code of ours).  Once given, the gate stays open while the operator
works and closes after :data:`IDLE` seconds without an action, as a screen lock
would.  After :data:`TRIES` wrong passwords in a row the gate refuses every try
for :data:`LOCKOUT` seconds.  Each try is one line in the journal, without the
password, of course.
"""

import ctypes
import ctypes.util
import hmac
import logging
import time
from pathlib import Path

LOG = logging.getLogger(__name__)
SHADOW = Path("/etc/shadow")
IDLE = 300
TRIES = 3
LOCKOUT = 30


def _libcrypt():
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    return lib


def shadow_hash(user="root", shadow=SHADOW):
    """The password hash of ``user`` in the shadow file, or None."""
    try:
        for line in Path(shadow).read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 1 and fields[0] == user:
                return fields[1]
    except OSError:
        return None
    return None


def check_password(password, stored):
    """True if ``password`` matches the shadow hash ``stored`` (never for a locked or
    empty entry: ``!``, ``*`` or nothing)."""
    if not stored or stored[0] in "!*" or not password:
        return False
    got = _libcrypt().crypt(password.encode(), stored.encode())
    return got is not None and hmac.compare_digest(got, stored.encode())


class Gate:
    """Open or closed; :meth:`unlock` with root's password opens it."""

    def __init__(self, stored=shadow_hash, check=check_password, clock=time.monotonic,
                 idle=IDLE):
        self.stored, self.check, self.clock, self.idle = stored, check, clock, idle
        self._last = None
        self._failures = 0
        self._locked_until = 0.0

    def is_open(self):
        if self._last is None or self.clock() - self._last > self.idle:
            self._last = None
            return False
        return True

    def touch(self):
        """An action was done: the gate stays open :data:`IDLE` seconds more."""
        if self.is_open():
            self._last = self.clock()

    def close(self):
        self._last = None

    def unlock(self, password):
        """``(True, "")`` or ``(False, why)``: the one line the console shows."""
        now = self.clock()
        if now < self._locked_until:
            return False, "too many wrong passwords: wait %d s" % (self._locked_until - now + 1)
        stored = self.stored()
        if stored is None:
            LOG.warning("console: root has no password entry to check; actions stay locked")
            return False, "root has no password on this node; set one with passwd over SSH"
        if self.check(password, stored):
            self._failures = 0
            self._last = now
            LOG.warning("console: unlocked with root's password")
            return True, ""
        self._failures += 1
        LOG.warning("console: a wrong root password (%d in a row)", self._failures)
        if self._failures >= TRIES:
            self._failures = 0
            self._locked_until = now + LOCKOUT
            return False, "wrong password; %d wrong in a row: wait %d s" % (TRIES, LOCKOUT)
        return False, "wrong password"
