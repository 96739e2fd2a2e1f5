"""Nodes as ``systemd-nspawn`` containers booting the built image's root file system.

Each node boots the real systemd of the ``minimal`` image (unpacked once from
the PXE bundle's squashfs) on its own overlay (``lowerdir`` = the image,
``upperdir`` = the node's changes, kept across reboots like a disk), on a
bridge inside a network namespace the test creates.  The host runs no
systemd as PID 1, hence ``--register=no --keep-unit`` (TESTBED.md).

- :meth:`Node.boot` starts the container (console to ``console.log``);
- :meth:`Node.power_cut` SIGKILLs its PID 1, which takes every process of
  the container with it at once, like pulling the plug;
- :meth:`Node.run` runs a command inside it with ``nsenter`` (machinectl
  needs a registered machine);
- :meth:`Node.path` is a path in its root file system, seen from the host.

When the rack is torn down, what each node left on the disk (its overlay's changes, a loop
device's file) is removed but for its journal (moved to
``NODE/journal``, read with ``journalctl -D``) and its console log.

Each container starts from a cgroup of its own (TESTBED.md): without a
systemd on the host, nspawn puts a container under its caller's cgroup, and
containers started from one process would see each other's units (a stop in
one signalled the other's processes).  Every node boots as a real first boot
(machine-id "uninitialized"): the image's own presets decide what runs.
"""

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from netns import ip, namespace, wait_until

from rackforge.proc import stop_process

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")


def _cgroup_dirs(name):
    return [Path(root) / ("rf-nsp-%s" % name) for root in CGROUP_ROOTS
            if Path(root, "cgroup.procs").exists()]


def _enter_cgroups(dirs):
    """preexec_fn: move the child into its own cgroups before it execs nspawn."""
    def enter():
        for d in dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))
    return enter


def _remove_cgroups(dirs):
    for d in dirs:
        if d.is_dir():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()),
                              key=lambda p: len(p.parts), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                d.rmdir()
            except OSError:
                pass


def unpack(squashfs, target):
    """The image's root file system as a directory (once per test session)."""
    target = Path(target)
    if not (target / "usr").is_dir():
        subprocess.run(["unsquashfs", "-no-progress", "-quiet", "-f", "-d", str(target),
                        str(squashfs)], check=True, capture_output=True)
    return target


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _comm(pid):
    try:
        return Path("/proc/%d/comm" % pid).read_text().strip()
    except OSError:
        return None


class Node:
    def __init__(self, name, base, workdir, netns, bridge):
        self.name, self.base, self.netns, self.bridge = name, Path(base), netns, bridge
        self.dir = Path(workdir) / name
        self.upper, self.work, self.root = (self.dir / d for d in ("upper", "work", "root"))
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        self.console = self.dir / "console.log"
        self.devices = []           # host block devices handed to this node (loop devices)
        self.veths = []             # extra links: (name in the rack's namespace, inside)
        self.cleanups = []          # run when the rack is torn down (detach them)
        self.proc = None
        self.mounted = False
        self.cgroups = []

    # -- the root file system ----------------------------------------------------------
    def mount(self):
        if not self.mounted:
            options = "lowerdir=%s,upperdir=%s,workdir=%s" % (self.base, self.upper, self.work)
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options,
                            str(self.root)], check=True, capture_output=True)
            self.mounted = True

    def umount(self):
        _remove_cgroups(self.cgroups)
        if self.mounted:
            subprocess.run(["umount", str(self.root)], check=False, capture_output=True)
            self.mounted = False

    def discard(self):
        """Free the disk the node used once the rack is torn down: its changes go, except
        its journal and console log (what a person reads after a failure).  A rack of the
        hci image leaves 1 to 2 GB a node otherwise, for the whole pytest session."""
        if self.root.is_mount():
            return                      # never delete through a mount that did not go
        journal, kept = self.upper / "var" / "log" / "journal", self.dir / "journal"
        if journal.is_dir() and not kept.exists():
            journal.rename(kept)
        for p in self.dir.iterdir():    # its overlay's changes, a loop device's file
            if p in (kept, self.console, self.root):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def path(self, inside):
        return self.root / str(inside).lstrip("/")

    def write(self, inside, text, mode=0o600):
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    # -- power -------------------------------------------------------------------------
    def boot(self):
        self.mount()
        self.cgroups = _cgroup_dirs(self.name)
        for d in self.cgroups:
            d.mkdir(exist_ok=True)
        with open(self.console, "ab") as out:
            self.proc = subprocess.Popen(
                # nsenter, not `ip netns exec`: that remounts /sys, and nspawn needs
                # the host's cgroup mounts under it
                ["nsenter", "--net=/run/netns/%s" % self.netns, "systemd-nspawn", "-q", "-D",
                 str(self.root), "-b", "--register=no", "--keep-unit", "-M", self.name,
                 "--network-bridge=%s" % self.bridge, "--console=pipe",
                 "--setenv=SYSTEMD_COLORS=0"]
                + ["--network-veth-extra=%s:%s" % pair for pair in self.veths]
                + ["--bind=%s" % d for d in self.devices]
                + ["--property=DeviceAllow=%s rwm" % d for d in self.devices],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_enter_cgroups(self.cgroups))
        return self

    def leader(self):
        """The container's PID 1 (systemd), seen from the host."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            for child in _children(pid):
                if _comm(child) == "systemd":
                    return child
                todo.append(child)
        return None

    def wait_booted(self, timeout=120):
        """Until the container's systemd can run commands."""
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("%s: nspawn exited %d:\n%s" % (
                    self.name, self.proc.returncode, self.console_text()[-3000:]))
            return self.leader() and self.run("true", check=False).returncode == 0
        wait_until(up, timeout, "%s to boot" % self.name, interval=0.5)

    def power_cut(self):
        """SIGKILL the container's PID 1: every process in it dies at once."""
        pid = self.leader()
        if pid:
            os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=60)
        self.proc = None

    def shutdown(self):
        if self.proc is None:
            return
        pid = self.leader()
        if pid:
            # systemd in a container powers off on SIGRTMIN+4
            os.kill(pid, signal.SIGRTMIN + 4)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.power_cut()
        finally:
            if self.proc is not None:
                stop_process(self.proc, timeout=10)
            self.proc = None

    # -- inside ------------------------------------------------------------------------
    def command(self, *argv, env=()):
        """The host's command that runs ``argv`` inside the node (its namespaces, a clean
        environment plus ``env``'s ``NAME=value`` words)."""
        pid = self.leader()
        if pid is None:
            raise AssertionError("%s is not running" % self.name)
        return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--",
                "/usr/bin/env", "-i", "PATH=" + CONTAINER_PATH, "LANG=C.UTF-8", *env, *argv]

    def run(self, *argv, check=True, timeout=120, input=None):
        """``argv`` inside the node; ``input``: its stdin (a secret goes there, never in
        the arguments)."""
        res = subprocess.run(self.command(*argv), capture_output=True, text=True,
                             timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise AssertionError("%s: %s -> %d\n%s%s" % (
                self.name, " ".join(argv), res.returncode, res.stdout, res.stderr))
        return res

    def console_text(self):
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def journal(self, unit):
        if self.leader() is None:
            return "(%s is not running: no journal)" % self.name
        return self.run("journalctl", "-b", "-u", unit, "--no-pager", "-o", "cat",
                        check=False).stdout


@contextmanager
def rack(base, workdir, bridge="br0"):
    """A namespace with a bridge; yields a factory ``node(name) -> Node``; cleans up."""
    nodes = []
    with namespace("rf-nsp") as ns:
        ip("-n", ns, "link", "add", bridge, "type", "bridge")
        ip("-n", ns, "link", "set", bridge, "up")

        def node(name):
            n = Node(name, base, workdir, ns, bridge)
            nodes.append(n)
            return n
        node.netns = ns
        try:
            yield node
        finally:
            for n in nodes:
                try:
                    n.shutdown()
                finally:
                    n.umount()
                    for cleanup in n.cleanups:
                        cleanup()
            # a container that did not stop in time leaves nothing mounted behind
            deadline = time.monotonic() + 30
            while any(n.root.is_mount() for n in nodes) and time.monotonic() < deadline:
                for n in nodes:
                    subprocess.run(["umount", "-l", str(n.root)], capture_output=True)
            for n in nodes:
                n.discard()
