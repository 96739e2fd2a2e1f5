"""DHCP for the rack through dnsmasq: configuration from a template, and a supervisor.

rackforge writes no DHCP server of its own.  It renders dnsmasq's
configuration (``templates/dnsmasq.conf.j2``), runs dnsmasq in the
foreground as its child, forwards dnsmasq's log lines into its own log,
restarts dnsmasq with a growing delay if it dies, and stops it when
rackforge stops.
"""

import logging
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from rackforge import errors
from rackforge.fileutil import atomic_write
from rackforge.proc import stop_process

LOG = logging.getLogger("rackforge.pxe.dhcp")
TEMPLATES = Path(__file__).parent / "templates"
# Option 93 values of x86-64 UEFI firmware (7: EFI BC, 9: EFI x86-64).
EFI_ARCHES = (7, 9)
RESTART_DELAYS = (1, 2, 5, 10, 30)


class DnsmasqMissing(errors.HostToolMissing):
    pass


class DhcpFailed(errors.RackforgeError):
    message = "dnsmasq on {interface} failed to start: {detail}"


def render_config(iface, mode, script_url, leasefile, bios_loader, efi_loader,
                  dhcp_range=None, lease_time="1h", hostsdir=None):
    """The dnsmasq configuration text for ``iface`` (a ServeInterface)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             keep_trailing_newline=True)
    context = dict(interface=iface.name, mode=mode, server=iface.ip,
                   network=str(iface.network.network_address), netmask=str(iface.network.netmask),
                   script_url=script_url, leasefile=leasefile, bios_loader=bios_loader,
                   efi_loader=efi_loader, efi_arches=EFI_ARCHES, lease_time=lease_time,
                   range_first=None, range_last=None, hostsdir=hostsdir)
    if mode == "full":
        if not dhcp_range:
            raise errors.ConfigError("--mode full hands out addresses: give them with "
                                     "--range FIRST,LAST")
        if not hostsdir:
            raise ValueError("full mode needs a hostsdir for the machines that booted")
        context.update(range_first=str(dhcp_range[0]), range_last=str(dhcp_range[1]))
    return env.get_template("dnsmasq.conf.j2").render(**context)


class DnsmasqSupervisor:
    """Keeps one dnsmasq running with ``config`` until :meth:`stop`."""

    def __init__(self, config_text, workdir, interface, binary=None):
        self.binary = binary or shutil.which("dnsmasq")
        if not self.binary:
            raise DnsmasqMissing(tool="dnsmasq", install="apt-get install dnsmasq-base")
        self.workdir = Path(workdir)
        self.config = self.workdir / "dnsmasq.conf"
        atomic_write(self.config, config_text)
        self.interface = interface
        self.restarts = 0
        self.proc = None
        self._stopping = threading.Event()
        self._thread = None

    def command(self):
        return [self.binary, "--keep-in-foreground", "--conf-file=%s" % self.config,
                "--log-facility=-", "--pid-file="]

    def check_config(self):
        """dnsmasq's own syntax check, so a bad config fails before we go on."""
        res = subprocess.run(self.command() + ["--test"], capture_output=True, text=True)
        if res.returncode != 0:
            raise DhcpFailed(interface=self.interface,
                             detail=(res.stderr or res.stdout).strip().splitlines()[-1])

    def start(self, ready_timeout=10):
        """Start dnsmasq; returns once it runs (or raises with its last words)."""
        self.check_config()
        self._spawn()
        # dnsmasq exits at once when it cannot bind (port in use, interface gone)
        try:
            code = self.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            raise DhcpFailed(interface=self.interface,
                             detail=self._last_line or "exit status %d" % code)
        self._thread = threading.Thread(target=self._watch, name="dnsmasq-supervisor",
                                        daemon=True)
        self._thread.start()

    def _spawn(self):
        self._last_line = ""
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace")
        threading.Thread(target=self._forward_log, args=(self.proc,), daemon=True,
                         name="dnsmasq-log").start()

    def _forward_log(self, proc):
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                self._last_line = line
                LOG.info("dnsmasq: %s", line)

    def _watch(self):
        """Restart dnsmasq whenever it exits, until stop() is called.

        A restart that fails (no file descriptor or memory left for the fork)
        is logged in one line and tried again after the next delay: this
        thread never ends while DHCP is wanted.
        """
        code = self.proc.wait()
        while not self._stopping.is_set():
            delay = RESTART_DELAYS[min(self.restarts, len(RESTART_DELAYS) - 1)]
            LOG.warning("dnsmasq on %s exited with status %s; restarting in %ds",
                        self.interface, code, delay)
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            try:
                self._spawn()
            except OSError as e:
                code = "(not started: %s)" % (e.strerror or e)
                continue
            code = self.proc.wait()

    def reload(self):
        """Make dnsmasq read its hosts directory anew (SIGHUP); leases are kept."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGHUP)

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def stop(self):
        self._stopping.set()
        if self.proc:
            stop_process(self.proc)
        if self._thread:
            self._thread.join(timeout=15)
