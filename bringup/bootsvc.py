"""The rack's boot services as a unit: ``rackforge-pxe.service`` runs ``pxe serve``.

``rack up`` writes the service's arguments to :func:`env_path`
(``/etc/rackforge/pxe.env``, root only, written atomically) and then enables
and starts the unit through :func:`rackforge.systemd.systemctl`; the unit
(``elements/rackforge-bringup``, disabled in the image) reads the file::

    RACKFORGE_PXE_ARGS=--interface eno2 --bundle /srv/pxe --mode proxy

The file is the intent: it is written before the unit is touched, so a
``rack up`` that stops here starts the same services when run again, without
repeating ``--interface``.  A changed file restarts the unit; the same file
only starts it if it is not running (nodes booting from it are not cut off).
Every argument is checked before anything is written: the interface, range
and bundle as ``pxe serve`` checks them, and each value one word (systemd
splits the variable on blanks).
"""

import re
import time

from rackforge import errors, paths
from rackforge.fileutil import atomic_write, make_dirs, read_limited

UNIT = "rackforge-pxe.service"
VARIABLE = "RACKFORGE_PXE_ARGS"
#: how long ``pxe serve`` may take to say it serves (its status file): it hashes the
#: bundle and starts dnsmasq first (34 s on a TCG guest); a failed unit ends the wait early
START_WAIT = 300
_WORD = re.compile(r"[A-Za-z0-9_.,:/@%+=-]{1,4096}")


class BootServicesError(errors.ConfigError):
    message = "boot services: {detail}"


class BootServicesDown(errors.RackforgeError):
    message = ("the boot services did not come up within {seconds} s ({detail}); see "
               "'journalctl -u %s' and 'rackforge pxe status'" % UNIT)
    retryable = True


def env_path():
    return paths.config_dir() / "pxe.env"


def arguments(interface, bundle, mode="proxy", dhcp_range=None, http_port=None, etcd=None,
              cluster=None, allow_default_route=False):
    """The words of ``pxe serve``'s arguments; each value checked to be one word."""
    words = ["--interface", interface, "--bundle", str(bundle), "--mode", mode]
    if allow_default_route:         # checked here as pxe serve checks it: passed on too
        words.append("--allow-default-route")
    if dhcp_range:
        words += ["--range", dhcp_range]
    if http_port:
        words += ["--http-port", str(http_port)]
    if etcd:
        words += ["--etcd", etcd]
    if cluster:
        words += ["--cluster", cluster]
    for word in words:
        if not _WORD.fullmatch(word):
            raise BootServicesError(detail="'%s' cannot be passed to the service: a value "
                                    "is one word of letters, digits and _.,:/@%%+=-"
                                    % errors.printable(word)[:60])
    return words


def check(interface, bundle, mode, dhcp_range, allow_default_route=False):
    """``pxe serve``'s own checks (interface, range, bundle), before anything is written."""
    from rackforge.pxe import netcheck, service

    iface = netcheck.check_interface(interface, allow_default_route)
    if dhcp_range:
        first, _, last = dhcp_range.partition(",")
        netcheck.check_range(iface, first, last)
    elif mode == "full":
        raise BootServicesError(detail="--mode full hands out addresses: give them with "
                                "--range FIRST,LAST inside %s" % iface.network)
    service.check_bundle(bundle)


def render(words):
    return ("# written by 'rackforge rack up'; read by %s\n%s=%s\n"
            % (UNIT, VARIABLE, " ".join(words)))


def recorded():
    """The words of the file a previous ``rack up`` wrote, or None."""
    try:
        text = read_limited(env_path(), 64 * 1024).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == VARIABLE:
            return value.split()
    return None


def ensure(words=None, systemctl=None):
    """Write the arguments (if given) and have the unit running them.

    :returns: what was done: ``"started"``, ``"restarted"`` or ``"running"``
    :raises: BootServicesError (nothing recorded and no arguments), SystemctlFailed
    """
    from rackforge import systemd

    systemctl = systemctl or systemd.systemctl
    before = recorded()
    if words is None and before is None:
        raise BootServicesError(detail="none configured here yet: give --interface IF and "
                                "--bundle DIR (or --no-pxe if they run elsewhere)")
    changed = words is not None and words != before
    if changed:
        make_dirs(env_path().parent, 0o755)
        atomic_write(env_path(), render(words), mode=0o600)      # the intent, first
    systemctl("enable", UNIT)
    if changed and before is not None:
        systemctl("restart", UNIT)
        return "restarted"
    if systemctl_active(systemctl):
        return "running"
    systemctl("start", UNIT)
    return "started"


def systemctl_active(systemctl):
    from rackforge import systemd
    try:
        systemctl("is-active", "--quiet", UNIT)
        return True
    except systemd.SystemctlFailed:
        return False


def unit_failed(systemctl=None):
    from rackforge import systemd
    systemctl = systemctl or systemd.systemctl
    try:
        systemctl("is-failed", "--quiet", UNIT)
        return True
    except systemd.SystemctlFailed:
        return False


def wait_serving(read_status=None, seconds=START_WAIT, clock=time.monotonic, sleep=time.sleep,
                 failed=lambda: False):
    """Wait until ``pxe serve`` says it serves (its status file, its pid alive), or its
    unit fails (``failed()``), or ``seconds`` pass.

    :returns: the status.  :raises: BootServicesDown
    """
    if read_status is None:
        from rackforge.pxe.service import read_status
    deadline = clock() + seconds
    while True:
        status = read_status()
        if status and status.get("serving"):
            return status
        if failed():
            raise BootServicesDown(seconds=int(seconds - max(0, deadline - clock())),
                                   detail="its unit failed")
        if clock() >= deadline:
            raise BootServicesDown(seconds=seconds, detail="no status file says it serves"
                                   if not status else "its last server stopped")
        sleep(1.0)
