"""A virtual rack brought up from a seed installed from the ISO, for the e2e test and the bench.

The operator's journey on one machine (``tests/e2e/test_rack_up.py``,
``bench/bringup.py``):

1. :func:`install_seed`: the ``minimal`` ISO in a QEMU guest (TCG, UEFI, as
   ``tests/integration/test_install_iso.py`` runs it) with a blank 8 GiB target
   disk (serial ``RFSEED01``) and a FAT disk labelled ``RF-ANSWER`` holding
   :func:`seed_answer`: the management address 10.213.88.10/24 on the NIC
   ``mac:52:54:00:5a:00:01`` (node-01's MAC in the virtual rack; the install
   guest's NIC has it too, so the plan's NIC check finds it), ``cluster:
   create``, root's SSH key.  The installer writes the disk and reboots (QEMU
   exits).  No gateway: the rack's bridge leads nowhere, and the boot services
   refuse an interface that carries the default route.
2. :func:`seed_rack`: ``virt rack up N --bmc-network --disk node-01=SEED_DISK``:
   node-01 boots an overlay over that disk (the disk itself stays as
   installed), every BMC answers on 10.213.88.1 inside the rack's namespace,
   where the seed reaches them.
3. :class:`SeedRack`: node-01 powered on through its BMC (boot device disk)
   becomes the seed (``first boot complete: node ... is controller``); then
   over SSH from the rack's namespace: the BMC password copied to the seed
   through stdin (never in argv), ``rackforge rack up 10.213.88.1:6231-... --user
   admin --password-file F --interface NIC --mode full --range ...``, ``rack
   status --json`` until every node is active, ``pxe status --json``.

Everything waits on a condition (a console line, SSH answering, a status);
nothing sleeps for a guess.  On a failure :meth:`SeedRack.report` prints the
tail of each node's console, the ``rack up`` output and the seed's journal of
its boot and join services before the rack goes down.
"""

import json
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from guest import PANIC, Guest, once_more_on_panic
from netns import wait_until
from virtrack import virt_rack

from rackforge.proc import stop_process
from rackforge.virt.guest import mac_for, node_name
from rackforge.virt.rack import BRIDGE_IP, SUBNET

ISO_NAME = "rackforge-minimal.iso"
SEED = node_name(1)
SEED_MAC = mac_for(1)
SEED_ADDRESS = SUBNET + ".10"
SEED_VIP = SUBNET + ".9"            # the cluster's VIP: free on the bridge, no one answers ARP
SEED_HOSTNAME = "rack1-seed"
CLUSTER = "rack1"
DHCP_RANGE = "%s.100,%s.150" % (SUBNET, SUBNET)
TARGET_SERIAL = "RFSEED01"
DISK_SIZE = "8G"                    # as the rack's own empty disks
RACK_MEMORY_MIB = 1536              # a PXE node holds the live root in memory while installing
PASSWORD_ON_SEED = "/root/bmc-password"

INSTALL_TIMEOUT = 30 * 60           # TCG: the ISO's live boot, a copy and a read-back
BOOT_TIMEOUT = 15 * 60              # a disk boot to first boot done / to the login prompt
SSH_TIMEOUT = 5 * 60
BRINGUP_TIMEOUT = 60 * 60           # two TCG nodes PXE-boot, install, reboot and join
RACK_UP_DEADLINE = "75m"            # rack up's own per-node deadline: longer than our wait
RACK_UP_EXIT_TIMEOUT = 5 * 60       # its follow loop sees the last node active
#: a node installed this long and not joined is reset through its BMC: under TCG the
#: disk boot and first boot take 2 to 6 min, and a live system's reboot hung twice
RACK_UP_REBOOT_WAIT = "12m"

ANSWER_LINE = r"rackforge installer: answer file from the partition labelled RF-ANSWER"
INSTALLED = r"rackforge installer: installed to \S+ \((\S+)\) in (\d+) s"
FIRST_BOOT = r"first boot complete: node (\S+) is controller"
SEED_TOOLS = ("ssh", "ssh-keygen", "mkfs.vfat", "mcopy", "qemu-img", "qemu-system-x86_64")

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
               "-o", "ServerAliveCountMax=4")
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-B]|[=>78cDEHM])")


def missing_tools():
    return [t for t in SEED_TOOLS if shutil.which(t) is None]


def seed_answer(public_key, hostname=SEED_HOSTNAME):
    """The seed's answer file: node-01's NIC by MAC, a static address on the rack's
    bridge (checked by ARP of the bridge), a new cluster with its VIP (the profile has
    three controllers), root's key."""
    return ("version: 1\n"
            "hostname: %s\n"
            "disk:\n"
            "  match: {serial: %s}\n"
            "network:\n"
            "  interface: \"mac:%s\"\n"
            "  address: %s/24\n"
            "  check: {peer: %s}\n"
            "cluster:\n"
            "  create: {name: %s, vip: %s}\n"
            "ssh_authorized_keys: [\"%s\"]\n"
            % (hostname, TARGET_SERIAL, SEED_MAC, SEED_ADDRESS, BRIDGE_IP, CLUSTER, SEED_VIP,
               public_key.strip()))


def ssh_key(workdir):
    """A new ed25519 key pair in ``workdir``: ``(private key path, public key line)``."""
    path = Path(workdir) / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rackforge-e2e",
                    "-f", str(path)], check=True, capture_output=True)
    return path, path.with_suffix(".pub").read_text().strip()


def answer_disk(path, text):
    """A 16 MiB FAT file system (no partition table) labelled RF-ANSWER with answer.yaml."""
    path = Path(path)
    subprocess.run(["mkfs.vfat", "-C", "-n", "RF-ANSWER", str(path), str(16 * 1024)],
                   check=True, capture_output=True)
    src = path.with_suffix(".yaml")
    src.write_text(text)
    subprocess.run(["mcopy", "-i", str(path), str(src), "::answer.yaml"], check=True,
                   capture_output=True)


def install_devices(iso, disk, answers):
    """The install guest's ISO, target and answer disk as QEMU arguments (pure).

    The ISO is a SATA CD-ROM first in the boot order and the answer disk is in
    the boot order too (after it; it boots nothing itself): OVMF connects only
    the devices of its boot order, and the ISO's GRUB must see the RF-ANSWER
    label to make the installer its default entry.  The disks carry serial
    numbers, as a server's do; the target is written in place.
    """
    return ["-drive", "file=%s,if=none,id=seedcd,media=cdrom,readonly=on" % iso,
            "-device", "ide-cd,drive=seedcd,bus=ide.2,bootindex=0",
            "-device", "virtio-scsi-pci,id=seedscsi",
            "-drive", "file=%s,if=none,id=seedtarget,format=qcow2" % disk,
            "-device", "scsi-hd,bus=seedscsi.0,drive=seedtarget,serial=%s" % TARGET_SERIAL,
            "-drive", "file=%s,if=none,id=seedanswer,format=raw" % answers,
            "-device", "scsi-hd,bus=seedscsi.0,drive=seedanswer,serial=RFANSWER01,bootindex=1"]


@dataclass
class SeedInstall:
    disk: Path                  # the installed seed disk (qcow2), never written again
    installer_s: int            # the installer's own figure (its console line)
    wall_s: float               # from the ISO guest's start to its reboot
    console: Path


def install_seed(iso, workdir, public_key, timeout=INSTALL_TIMEOUT):
    """The seed's disk, installed from ``iso`` by its answer file (see the module)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "seed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), DISK_SIZE],
                   check=True)
    answers = workdir / "answer.img"
    answer_disk(answers, seed_answer(public_key))

    def make(attempt):
        guest = Guest(workdir / ("install" if attempt == 1 else "install-again"),
                      firmware="uefi", uefi_vars=workdir / "OVMF_VARS.fd")
        guest.devices += install_devices(iso, disk, answers)
        guest.add_user_nic(mac=SEED_MAC)
        return guest

    def install(guest):
        guest.wait_for(ANSWER_LINE, timeout)
        done = guest.wait_for(INSTALLED, timeout)
        return guest, done, guest.wait_exit(300)
    started = time.monotonic()
    # a TCG kernel panic (guest.once_more_on_panic) boots the ISO once more: the
    # installer writes the disk afresh either way
    guest, done, code = once_more_on_panic(make, install)
    wall = time.monotonic() - started
    assert "rackforge installer: FAILED" not in guest.output, guest.console_log
    assert done.group(1) == "serial:" + TARGET_SERIAL, done.group(0)
    assert code == 0, "the install guest exited %s; console: %s" % (code, guest.console_log)
    return SeedInstall(disk=disk, installer_s=int(done.group(2)), wall_s=wall,
                       console=guest.console_log)


def clean_console(text):
    """Console text without terminal escapes and carriage returns, for reading."""
    return ANSI.sub("", text).replace("\r", "")


def tail(text, lines=40):
    return "\n".join(clean_console(text).splitlines()[-lines:])


def bmc_target(bmcs):
    """``rack up``'s BMC argument for consecutive BMCs on one address: ``ADDR:PORT`` or
    ``ADDR:FIRST-LAST``."""
    hosts = {b.rsplit(":", 1)[0] for b in bmcs}
    ports = [int(b.rsplit(":", 1)[1]) for b in bmcs]
    if len(hosts) != 1 or ports != list(range(ports[0], ports[0] + len(ports))):
        raise ValueError("BMCs %s are not consecutive ports of one address" % ", ".join(bmcs))
    host = hosts.pop()
    return "%s:%d" % (host, ports[0]) if len(ports) == 1 else \
        "%s:%d-%d" % (host, ports[0], ports[-1])


def rack_up_command(bmcs, interface, deadline=RACK_UP_DEADLINE):
    """The seed's ``rack up`` over ``bmcs`` (the bundle: the seed's own, the default)."""
    return ("rackforge rack up %s --user admin --password-file %s --interface %s --mode full "
            "--range %s --deadline %s --reboot-wait %s" % (
                bmc_target(bmcs), PASSWORD_ON_SEED, interface, DHCP_RANGE, deadline,
                RACK_UP_REBOOT_WAIT))


def nic_with_mac(links, mac):
    """The name of the link with ``mac`` in ``ip -j link show`` output (parsed)."""
    for link in links:
        if (link.get("address") or "").lower() == mac.lower():
            return link["ifname"]
    raise AssertionError("no NIC with MAC %s on the seed: %s"
                         % (mac, [(k.get("ifname"), k.get("address")) for k in links]))


def state_changes(rows, seen):
    """Lines for the nodes of ``rack status --json`` whose state changed since ``seen``
    (updated in place)."""
    lines = []
    for row in rows:
        key = row.get("id") or row["name"]
        if seen.get(key) != row["state"]:
            seen[key] = row["state"]
            lines.append("%-24s %-22s %s%s" % (row["name"], row.get("bmc") or "-",
                                               row["state"], ": " + row["error"]
                                               if row.get("error") else ""))
    return lines


class RackUpRun:
    """``rackforge rack up`` running on the seed through SSH; its output in a file."""

    def __init__(self, argv, log):
        self.log = Path(log)
        self._out = open(self.log, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def output(self):
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self):
        stop_process(self.proc, timeout=20)
        self._out.close()


class SeedRack:
    """The virtual rack (:class:`virtrack.VirtRack`) whose node-01 is the seed."""

    def __init__(self, rack, key, workdir, say=print):
        self.rack = rack
        self.key = Path(key)
        self.workdir = Path(workdir)
        self.say = say
        self.netns = rack.info["netns"]
        self.nodes = {n["name"]: n for n in rack.info["nodes"]}
        self.rack_up = None

    # -- BMCs and consoles -----------------------------------------------------------------
    def bmc(self, *args, nodes, timeout=120):
        """A ``rackforge`` BMC command on ``nodes`` (from inside the rack's namespace)."""
        res = self.rack.bmc(*args, bmcs=[self.nodes[n]["bmc"] for n in nodes], timeout=timeout)
        assert res.returncode == 0, "%s on %s: %s%s" % (
            " ".join(map(str, args)), nodes, res.stdout, res.stderr)
        return res

    def console_path(self, name):
        return Path(self.nodes[name]["console"])

    def console_size(self, name):
        try:
            return self.console_path(name).stat().st_size
        except FileNotFoundError:
            return 0

    def console(self, name, since=0):
        try:
            with open(self.console_path(name), "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, name, pattern, timeout, since=0):
        """The first match of ``pattern`` on ``name``'s console after byte ``since``; a
        kernel panic there fails at once."""
        regex = re.compile(pattern)

        def seen():
            text = self.console(name, since)
            m = regex.search(text)
            if m:
                return m
            if PANIC in text:
                raise AssertionError("%s's kernel panicked before %r; console %s:\n%s"
                                     % (name, pattern, self.console_path(name), tail(text)))
            return None
        return wait_until(seen, timeout, "%r on %s's console (%s)"
                          % (pattern, name, self.console_path(name)), interval=2)

    def installed_seconds(self, name):
        """The installer's own figure on ``name``'s console, or None."""
        m = re.search(INSTALLED, self.console(name))
        return int(m.group(2)) if m else None

    # -- the seed ----------------------------------------------------------------------------
    def ssh_argv(self, command):
        return ["ip", "netns", "exec", self.netns, "ssh", *SSH_OPTIONS, "-i", str(self.key),
                "root@" + SEED_ADDRESS, command]

    def ssh(self, command, stdin=None, timeout=120, check=True):
        res = subprocess.run(self.ssh_argv(command), stdin=stdin or subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode:
            raise AssertionError("on the seed, '%s' exited %d: %s" % (
                command, res.returncode, (res.stderr.strip() or res.stdout.strip())[-3000:]))
        return res

    def boot_seed(self, timeout=BOOT_TIMEOUT):
        """node-01 on from its disk through its BMC, until its first boot made it the seed
        and SSH answers.  :returns: (seconds from power-on to first boot done, its name)"""
        self.bmc("bmc", "boot-device", "disk", "--persistent", nodes=[SEED])
        started = time.monotonic()
        self.bmc("power", "on", nodes=[SEED])
        done = self.wait_console(SEED, FIRST_BOOT, timeout)
        took = time.monotonic() - started
        self.say("seed %s: first boot done %.0f s after power-on" % (done.group(1), took))

        def answers():
            try:
                return self.ssh("true", timeout=30, check=False).returncode == 0
            except subprocess.TimeoutExpired:
                return False
        wait_until(answers, SSH_TIMEOUT, "SSH to the seed at %s" % SEED_ADDRESS, interval=5)
        return took, done.group(1)

    def copy_password(self):
        """The rack's BMC password to the seed, 0600, through SSH's stdin."""
        with open(self.rack.password_file, "rb") as f:
            self.ssh("umask 077 && cat > {0} && chmod 600 {0}".format(PASSWORD_ON_SEED),
                     stdin=f)
        mode = self.ssh("stat -c %%a %s" % PASSWORD_ON_SEED).stdout.strip()
        assert mode == "600", mode

    def seed_nic(self):
        """The seed's NIC on the rack's bridge (node-01's MAC), by its kernel name."""
        return nic_with_mac(json.loads(self.ssh("ip -j link show").stdout), SEED_MAC)

    def start_rack_up(self, pxe_nodes, interface):
        """``rack up`` on the seed over the BMCs of ``pxe_nodes``, in the background."""
        command = rack_up_command([self.nodes[n]["bmc"] for n in pxe_nodes], interface)
        self.say("on the seed: " + command)
        self.rack_up = RackUpRun(self.ssh_argv(command), self.workdir / "rack-up.log")
        return self.rack_up

    def rack_status(self):
        """``rack status --json`` on the seed, or None while it cannot answer."""
        try:
            res = self.ssh("rackforge rack status --json", timeout=120, check=False)
        except subprocess.TimeoutExpired:
            return None
        try:
            return json.loads(res.stdout)
        except ValueError:
            return None

    def wait_active(self, count, timeout=BRINGUP_TIMEOUT, poll=10):
        """Until ``rack status`` shows ``count`` nodes, all active; each state change is
        said as it comes.  A failed node, or ``rack up`` ending early, fails at once."""
        seen = {}
        run = self.rack_up

        def all_active():
            status = self.rack_status()
            if status is not None:
                for line in state_changes(status["nodes"], seen):
                    self.say("%s  %s" % (time.strftime("%H:%M:%S"), line))
                failed = [r for r in status["nodes"] if r["state"] == "failed"]
                assert not failed, "failed: %s" % "; ".join(
                    "%s: %s" % (r["name"], r.get("error")) for r in failed)
            if run is not None and run.poll() not in (None, 0):
                raise AssertionError("rack up exited %s before %d nodes were active:\n%s"
                                     % (run.poll(), count, tail(run.output(), 60)))
            return status if status is not None and len(status["nodes"]) == count and all(
                r["state"] == "active" for r in status["nodes"]) else None
        return wait_until(all_active, timeout, "%d active nodes in 'rack status'" % count,
                          interval=poll)

    def boots(self):
        """The seed's boot records (``pxe status --json``), by MAC."""
        res = self.ssh("rackforge pxe status --json", check=False)
        found = json.loads(res.stdout)
        assert not found.get("registry_error"), found["registry_error"]
        return {b["mac"].lower(): b for b in found.get("boots") or []}

    # -- when something went wrong -------------------------------------------------------
    def report(self):
        """What a failure needs: each node's console tail and BMC log, the rack up output,
        the virtual rack's status, the seed's boot and join services' journal."""
        say = self.say
        for name in self.nodes:
            say("==== %s console (%s), last lines" % (name, self.console_path(name)))
            say(tail(self.console(name), 60))
            bmc_log = Path(self.nodes[name]["dir"]) / "bmc.log"
            if bmc_log.exists():
                say("==== %s BMC log" % name)
                say(tail(bmc_log.read_text(errors="replace"), 15))
        if self.rack_up is not None:
            say("==== rack up on the seed (%s)" % self.rack_up.log)
            say(tail(self.rack_up.output(), 60))
        try:
            say("==== virt rack status")
            say(json.dumps(self.rack.status(), indent=1)[-4000:])
            res = self.ssh("journalctl --no-pager -n 200 -u rackforge-pxe -u rackforge-join",
                           timeout=60, check=False)
            say("==== the seed's journal: rackforge-pxe, rackforge-join")
            say(res.stdout[-20000:] or res.stderr)
        except (subprocess.TimeoutExpired, OSError, AssertionError, ValueError) as e:
            say("(the seed could not be asked: %s)" % e)


@contextmanager
def seed_rack(workdir, count, seed_disk, key, memory_mib=RACK_MEMORY_MIB, say=print):
    """A virtual rack of ``count`` whose node-01 boots ``seed_disk`` (an overlay over it),
    with its BMCs on the rack's bridge; :meth:`SeedRack.report` on a failure, then down."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with virt_rack(workdir, count, "--bmc-network", "--disk", "%s=%s" % (SEED, seed_disk),
                   "--memory", memory_mib) as rack:
        seed = SeedRack(rack, key, workdir, say)
        try:
            yield seed
        except Exception:
            seed.report()
            raise
        finally:
            if seed.rack_up is not None:
                seed.rack_up.stop()
