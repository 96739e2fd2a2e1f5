"""``rackforge pxe serve``: the boot services of one interface, started and stopped together.

Order matters: everything that can be checked is checked before anything
starts (interface, range, bundle, loaders, registry), then TFTP and HTTP bind,
and DHCP starts last so no client is sent to a server that is not there yet.
Stopping runs in reverse.  In full mode the addresses the install API made
static (``bringup/addressing.py``) are reserved in dnsmasq for their MACs, from
the start and then every few seconds.  While serving, a status file
(``<state>/pxe/status.json``, written atomically) tells ``rackforge pxe
status`` what is being served.
"""

import json
import logging
import os
import resource
import shutil
import threading
import time
from pathlib import Path

from rackforge import bundle as bundle_mod
from rackforge import errors, paths
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.pxe import dnsmasq, loaders, netcheck
from rackforge.pxe.bootrecords import BadBoot, BootRecorder, KnownHosts
from rackforge.pxe.bootscript import ScriptRenderer
from rackforge.pxe.limits import LogLimiter
from rackforge.pxe.http import BootHttpServer, Limits
from rackforge.pxe.tftp import TftpServer

LOG = logging.getLogger("rackforge.pxe")
BUNDLE_TEMPLATE = bundle_mod.TEMPLATE
STATUS_INTERVAL = 5
FILES_WANTED = 8192       # open files: 256 TFTP transfers and 1,024 HTTP connections fit
FILES_RESERVED = 128      # logs, dnsmasq's pipes, the etcd client's pool (64), the status


class BundleInvalid(errors.ConfigError):
    message = ("{bundle} is not a PXE bundle: {missing} missing; build one with "
               "'rackforge build PROFILE' and pass images/PROFILE/pxe")


def raise_file_limit(want=FILES_WANTED):
    """Raise this process's soft limit on open files towards ``want`` (within the hard
    limit: systemd's default soft limit, 1,024, is for select(); everything here
    uses epoll); returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            LOG.warning("open-file limit stays at %d: %s", soft, _one_line(e))
    return soft


def http_connection_cap(files):
    """HTTP connections that fit in ``files`` open files beside the rest of ``pxe
    serve``: each TFTP transfer and each HTTP download hold a socket and a file."""
    budget = files - 2 * TftpServer.max_transfers - FILES_RESERVED
    return max(16, min(Limits.max_connections, budget // 2))


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def pxe_state_dir():
    return paths.state_dir() / "pxe"


def status_file():
    return pxe_state_dir() / "status.json"


def check_bundle(bundle):
    bundle = Path(bundle)
    missing = bundle_mod.missing(bundle)
    if missing:
        raise BundleInvalid(bundle=bundle, missing=", ".join(missing))
    return bundle.resolve()


class BootServices:
    """DHCP (dnsmasq), TFTP (tftpy) and HTTP boot on one interface."""

    def __init__(self, iface, bundle, registry, mode="proxy", dhcp_range=None, http_port=8080,
                 tftp_port=69, cluster="rackforge", efi_loader=loaders.EFI_LOADERS[0],
                 workdir=None):
        self.iface = iface
        self.bundle = bundle
        self.registry = registry
        self.mode = mode
        self.dhcp_range = dhcp_range
        self.http_port = http_port
        self.tftp_port = tftp_port
        self.cluster = cluster
        self.efi_loader = efi_loader
        self.workdir = Path(workdir or pxe_state_dir())
        self.started = None
        self._stop = threading.Event()
        self.http = self.tftp = self.dhcp = None
        self._runtime = None
        self._hosts = None
        self._status_failing = False
        self._reserve_log = LogLimiter(LOG, burst=1, interval=300)

    # -- life cycle --------------------------------------------------------------
    def start(self):
        make_dirs(self.workdir, 0o755)    # dnsmasq reads its hosts directory here
        http_limits = Limits(max_connections=http_connection_cap(raise_file_limit()))
        recorder = BootRecorder(self.registry)
        boots = recorder.load()         # fails now, in one line, if etcd is not there
        renderer = ScriptRenderer(self.bundle / BUNDLE_TEMPLATE)
        tftp_root = self.workdir / "tftp"
        loaders.populate_tftp_root(tftp_root)
        try:
            self.tftp = TftpServer(tftp_root, self.iface.ip, port=self.tftp_port)
            self.tftp.start()
            hosts = self._hosts = self._dhcp_hosts(boots)
            self.reserve()
            self.http = BootHttpServer(self.iface.ip, self.http_port, str(self.bundle),
                                       renderer, self.registry, self.iface.ip, self.cluster,
                                       on_boot=hosts.add, recorder=recorder,
                                       http_limits=http_limits)
            self.http.start()
            config = dnsmasq.render_config(
                self.iface, self.mode, self.http.base_url + "/boot.ipxe",
                str(self.workdir / "dnsmasq.leases"), loaders.BIOS_LOADER, self.efi_loader,
                self.dhcp_range, hostsdir=str(hosts.directory))
            self.dhcp = dnsmasq.DnsmasqSupervisor(config, self.workdir, self.iface.name)
            self.dhcp.start()
        except BaseException:
            self.stop()
            raise
        self.started = time.time()
        self.write_status()
        LOG.info("serving %s on %s (%s): DHCP %s, TFTP :%d, HTTP %s", self.bundle,
                 self.iface.name, self.iface.ip,
                 "proxy" if self.mode == "proxy" else "%s-%s" % self.dhcp_range,
                 self.tftp.port, self.http.base_url)

    def _dhcp_hosts(self, boots):
        """Where dnsmasq finds the MACs that booted from us (full mode answers them).

        dnsmasq reads it after dropping root, so it lives in a world-readable
        runtime directory, not under the (private) state directory.  MACs that
        booted before, by the registry's boot records, are there from the start.
        """
        import tempfile
        runtime = Path(os.environ.get("RUNTIME_DIRECTORY", "/run"))
        self._runtime = Path(tempfile.mkdtemp(prefix="rackforge-pxe-", dir=runtime))
        self._runtime.chmod(0o755)
        hosts = KnownHosts(self._runtime)
        for boot in boots:
            try:
                hosts.add(boot["mac"])
            except BadBoot:      # a record left by an older version: not a NIC's MAC
                LOG.warning("boot record of %s ignored: not a NIC's MAC", boot["mac"][:40])
        return hosts

    def reserve(self):
        """Full mode: reserve each address the install API made static for its node's
        MAC (inside this network, never our own); True if dnsmasq must re-read them.
        A registry that does not answer keeps the reservations there are."""
        from rackforge.bringup import addressing
        if self.mode != "full" or self._hosts is None:
            return False
        try:
            wanted = addressing.reservations(self.registry.kv, self.iface.network)
        except Exception as e:      # etcd away: the reservations made stay in force
            self._reserve_log.log("registry", logging.WARNING, "DHCP reservations not "
                                  "updated: %s; the ones made stay", _one_line(e))
            return False
        wanted = {mac: ip for mac, ip in wanted.items() if ip != self.iface.ip}
        try:
            changed = self._hosts.reserve(wanted)
        except (BadBoot, OSError) as e:
            self._reserve_log.log("hosts", logging.WARNING, "DHCP reservations not "
                                  "written: %s", _one_line(e))
            return False
        if changed:
            LOG.info("DHCP reservations: %s", ", ".join(
                "%s=%s" % item for item in sorted(wanted.items())) or "none")
        return changed

    def run(self):
        """Serve until :meth:`request_stop` (signal handlers call it) or an interrupt.

        Nothing that goes wrong here stops DHCP, TFTP or HTTP: a status file that
        cannot be written is one log line (and one more when it can again).
        """
        try:
            while not self._stop.wait(STATUS_INTERVAL):
                self.write_status()
                if self.reserve() and self.dhcp is not None:
                    self.dhcp.reload()
        finally:
            self.stop()

    def request_stop(self):
        self._stop.set()

    def stop(self):
        if self.started:
            # the last figures stay readable for 'pxe status' after we are gone
            self.write_status(serving=False)
            self.started = None
        for name in ("dhcp", "http", "tftp"):
            service = getattr(self, name)
            if service is not None:
                try:
                    service.stop()
                except Exception:  # one failing stop must not leave the others running
                    LOG.exception("stopping %s", name)
                setattr(self, name, None)
        if self._runtime:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None

    # -- status ------------------------------------------------------------------
    def status(self, serving=True):
        return {
            "serving": serving, "pid": os.getpid(), "interface": self.iface.name,
            "address": self.iface.ip, "mode": self.mode,
            "range": [str(a) for a in self.dhcp_range] if self.dhcp_range else None,
            "bundle": str(self.bundle), "etcd": getattr(self.registry.kv, "endpoint", None),
            "cluster": self.cluster,
            "started": self.started, "updated": time.time(),
            "http": dict(self.http.stats(), url=self.http.base_url,
                         requests=self.http.requests) if self.http else None,
            "tftp": dict(self.tftp.stats(), port=self.tftp.port) if self.tftp else None,
            "dhcp": {"pid": self.dhcp.pid, "restarts": self.dhcp.restarts}
            if self.dhcp else None,
        }

    def write_status(self, serving=True):
        """Write the status file; a failure is logged once, never raised."""
        try:
            atomic_write(status_file(), json.dumps(self.status(serving), indent=2) + "\n")
        except Exception as e:      # EMFILE, a full disk, a bug: serving goes on
            if not self._status_failing:
                LOG.error("status file %s not written: %s; serving goes on, 'pxe status'"
                          " shows older figures", status_file(), _one_line(e))
            self._status_failing = True
        else:
            if self._status_failing:
                LOG.info("status file %s written again", status_file())
            self._status_failing = False


def read_status():
    """The last status written by a server, with ``serving`` false if it is gone."""
    try:
        status = json.loads(status_file().read_text())
    except FileNotFoundError:
        return None
    if status.get("serving"):
        try:
            os.kill(status["pid"], 0)
        except ProcessLookupError:
            status["serving"] = False
    return status


def prepare(args, registry_factory):
    """Every check of ``pxe serve``'s arguments, before anything starts."""
    if os.geteuid() != 0:
        raise errors.NotPrivileged(action="serving DHCP and TFTP (ports 67 and 69)")
    iface = netcheck.check_interface(args.interface, args.allow_default_route)
    dhcp_range = None
    if args.range:
        first, _, last = args.range.partition(",")
        dhcp_range = netcheck.check_range(iface, first, last)
    elif args.mode == "full":
        raise errors.ConfigError("--mode full hands out addresses: give them with "
                                 "--range FIRST,LAST inside %s" % iface.network)
    bundle = check_bundle(args.bundle)
    return BootServices(iface, bundle, registry_factory(args.etcd), mode=args.mode,
                        dhcp_range=dhcp_range, http_port=args.http_port,
                        tftp_port=args.tftp_port, cluster=args.cluster,
                        efi_loader=args.efi_loader)
