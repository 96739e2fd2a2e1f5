"""``rackforge virt rack`` for the tests: up in a scratch state folder, down and checked.

:func:`virt_rack` runs the real commands (``virt rack up N`` ... ``virt rack
down``) with ``RACKFORGE_STATE`` pointing into the test's folder, and checks on
the way out that nothing is left: no namespace, no process that names the
state folder, no tap on the host, no ``<state>/virt``.
"""

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import rackforge
from netns import namespaces


def needs_virt():
    if os.geteuid() != 0:
        pytest.skip("the virtual rack needs root (namespaces, taps): make test runs as root")
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip("%s is missing: tools/setup-host --test installs it" % tool)


def processes_naming(text):
    """pids whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def qemu_cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().decode().split("\0")


@dataclass
class VirtRack:
    state: Path
    env: dict
    info: dict

    @property
    def password_file(self):
        return Path(self.info["password_file"])

    @property
    def password(self):
        if not hasattr(self, "_password"):
            self._password = self.password_file.read_text().strip()
        return self._password

    def bmcs(self):
        return [n["bmc"] for n in self.info["nodes"]]

    def cli(self, *args, timeout=120):
        res = rackforge(*args, env=self.env, timeout=timeout)
        assert self.password not in res.stdout + res.stderr
        return res

    def netns_cli(self, *args, timeout=120):
        """The real command line inside the rack's namespace (where ``--bmc-network``
        puts the BMCs, on the bridge's address)."""
        res = subprocess.run(["ip", "netns", "exec", self.info["netns"], sys.executable, "-m",
                              "rackforge", *map(str, args)], env=self.env, timeout=timeout,
                             capture_output=True, text=True)
        assert self.password not in res.stdout + res.stderr
        return res

    def bmc(self, *args, bmcs=None, timeout=120):
        """``rackforge ARGS --bmc ... --user admin --password-file F``, from where the
        BMCs are reached: the host, or the rack's namespace (``--bmc-network``)."""
        targets = []
        for b in bmcs or self.bmcs():
            targets += ["--bmc", b]
        run = self.netns_cli if self.info.get("bmc_netns") else self.cli
        return run(*args, *targets, "--user", "admin", "--password-file", self.password_file,
                   timeout=timeout)

    def status(self):
        res = rackforge("virt", "rack", "status", "--json", env=self.env, timeout=60)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def node(self, name):
        return next(n for n in self.status()["nodes"] if n["name"] == name)


@contextmanager
def virt_rack(workdir, count, *args, check_clean=True):
    needs_virt()
    state = Path(workdir) / "state"
    env = dict(os.environ, RACKFORGE_STATE=str(state))
    env.pop("RACKFORGE_BMC_PASSWORD", None)
    info = None
    try:
        res = rackforge("virt", "rack", "up", count, *args, env=env, timeout=180)
        assert res.returncode == 0, "virt rack up failed: %s%s" % (res.stdout, res.stderr)
        info = json.loads((state / "virt" / "rack.json").read_text())
        rack = VirtRack(state, env, info)
        assert rack.password and oct(rack.password_file.stat().st_mode & 0o777) == "0o600"
        yield rack
    finally:
        res = rackforge("virt", "rack", "down", env=env, timeout=180)
        if check_clean:
            assert res.returncode == 0, "virt rack down failed: %s%s" % (res.stdout, res.stderr)
            if info:
                assert_rack_gone(state, info)


def assert_rack_gone(state, info):
    assert info["netns"] not in namespaces()
    assert processes_naming(str(state)) == []
    assert not (Path(state) / "virt").exists()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for node in info["nodes"]:
        assert node["tap"] + ":" not in links
