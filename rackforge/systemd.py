"""systemd from rackforge: unit control (``systemctl``) and the notify protocol.

One helper for every room that starts, enables or stops units (first boot,
the cluster's etcd and join service, later the node agent), so that a failed
``systemctl`` is always the same one line naming the unit.
"""

import os
import subprocess

from rackforge import errors

#: long enough for a unit whose start waits for a learner to catch up on two slow cores
TIMEOUT = 210


class SystemctlFailed(errors.RackforgeError):
    message = "systemctl {args} failed: {detail}; see 'journalctl -u {unit}'"
    retryable = True


def systemctl(*args, run=subprocess.run, timeout=TIMEOUT, environ=None):
    """``systemctl ARGS`` (the unit last), with ``environ`` added to this process's
    environment when given; a failure is one :class:`SystemctlFailed` line naming
    that unit."""
    extra = {"env": {**os.environ, **environ}} if environ else {}
    try:
        res = run(["systemctl", *args], capture_output=True, text=True, timeout=timeout,
                  **extra)
    except subprocess.TimeoutExpired:
        raise SystemctlFailed(args=" ".join(args), unit=args[-1],
                              detail="no answer within %ds" % timeout) from None
    except FileNotFoundError:
        raise SystemctlFailed(args=" ".join(args), unit=args[-1],
                              detail="systemctl is not installed here") from None
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()
        raise SystemctlFailed(args=" ".join(args), unit=args[-1],
                              detail=detail[-1] if detail else res.returncode)
    return res


def notify(state):
    """``sd_notify(state)`` (READY=1, STATUS=..., WATCHDOG=1, STOPPING=1); a no-op
    outside a unit or without systemd-python."""
    try:
        from systemd import daemon
    except ImportError:
        return False
    return bool(daemon.notify(state))
