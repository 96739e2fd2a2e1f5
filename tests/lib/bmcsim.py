"""OpenIPMI's ``ipmi_sim`` as an independent BMC for tests, on 127.0.0.x.

:func:`ipmi_sim` writes a LAN config, an emulator command file (a BMC with a
FRU holding vendor, product, serial and MACs) and a chassis-control script,
starts ``ipmi_sim`` on a free UDP port of a loopback address, waits until it
answers a presence ping, and stops it on exit.  The chassis script keeps the
power and boot device in files, so a test reads what the BMC really did
(``sim.power``, ``sim.boot``, ``sim.history``).
"""

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHASSIS_SCRIPT = """\
#!/bin/sh
# Called by ipmi_sim: chassis STATEDIR get NAME... | set NAME VALUE...
d=$1; op=$2; shift 2
if [ "$op" = get ]; then
    for n in "$@"; do
        case $n in
            power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)";;
            boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo default)";;
        esac
    done
elif [ "$op" = set ]; then
    while [ $# -ge 2 ]; do
        case $1 in
            reset) echo reset >> "$d/history";;
            *) echo "$2" > "$d/$1"; echo "$1 $2" >> "$d/history";;
        esac
        shift 2
    done
fi
"""


def free_udp_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fru_bytes(vendor, product, serial, macs=()):
    """An IPMI FRU image: common header + product info area (extra fields: MACs)."""
    def field(text):
        data = text.encode()
        return bytes([0xC0 | len(data)]) + data

    body = bytes([1, 0, 0])     # version, length placeholder, language English
    body += field(vendor) + field(product) + field("RF-1") + field("1.0") + field(serial)
    body += field("") + field("")
    for mac in macs:
        body += field(mac)
    body += b"\xC1"
    while (len(body) + 1) % 8:
        body += b"\x00"
    body = bytes([1, (len(body) + 1) // 8]) + body[2:]
    body += bytes([(-sum(body)) & 0xFF])
    header = bytes([1, 0, 0, 0, 1, 0, 0])
    header += bytes([(-sum(header)) & 0xFF])
    return header + body


def presence_ping(host, port, timeout=0.2):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(bytes([6, 0, 0xFF, 6, 0, 0, 0x11, 0xBE, 0x80, 1, 0, 0]), (host, port))
        try:
            return len(s.recvfrom(512)[0]) >= 28
        except OSError:
            return False


class IpmiSim:
    def __init__(self, workdir, host, port, user, password, serial, macs, guid):
        self.workdir, self.host, self.port = Path(workdir), host, port
        self.user, self.password, self.serial, self.macs = user, password, serial, macs
        self.guid = guid
        self.proc = None

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def _read(self, name, default):
        try:
            return (self.workdir / name).read_text().strip()
        except FileNotFoundError:
            return default

    @property
    def power(self):
        return "on" if self._read("power", "0") == "1" else "off"

    @property
    def boot(self):
        return self._read("boot", "default")

    @property
    def history(self):
        return self._read("history", "").splitlines()

    def set_power(self, on):
        (self.workdir / "power").write_text("1\n" if on else "0\n")

    def write_config(self, sol=None):
        script = self.workdir / "chassis"
        script.write_text(CHASSIS_SCRIPT)
        script.chmod(0o755)
        sol_line = 'sol "tcp:%s" 115200' % sol if sol else ""
        (self.workdir / "lan.conf").write_text(textwrap.dedent("""\
            name "rfsim"
            set_working_mc 0x20
              startlan 1
                addr {host} {port}
                priv_limit admin
                allowed_auths_callback md5
                allowed_auths_user md5
                allowed_auths_operator md5
                allowed_auths_admin md5
                guid {guid}
              endlan
              chassis_control "{script} {state}"
              {sol}
              user 2 true "{user}" "{password}" admin 10 md5
            """).format(host=self.host, port=self.port, guid=self.guid, script=script,
                        state=self.workdir, sol=sol_line, user=self.user,
                        password=self.password))
        image = fru_bytes("Rackforge Labs", "SimServer 9", self.serial, self.macs)
        fru = " ".join("0x%02x" % b for b in image)
        (self.workdir / "sim.emu").write_text(textwrap.dedent("""\
            mc_setbmc 0x20
            mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
            mc_add_fru_data 0x20 0 {size} data {fru}
            mc_enable 0x20
            """).format(size=len(fru.split()), fru=fru))

    def start(self, timeout=10):
        (self.workdir / "state").mkdir(exist_ok=True)
        log = open(self.workdir / "ipmi_sim.log", "wb")
        # The config holds the password; the command line does not.
        self.proc = subprocess.Popen(
            ["ipmi_sim", "-c", str(self.workdir / "lan.conf"), "-f",
             str(self.workdir / "sim.emu"), "-s", str(self.workdir / "state"), "-n"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ipmi_sim exited: %s" %
                                   (self.workdir / "ipmi_sim.log").read_text()[-2000:])
            if presence_ping(self.host, self.port):
                return
        raise RuntimeError("ipmi_sim on %s did not answer within %ds" % (self.address, timeout))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def needs_ipmi_sim():
    if os.geteuid() != 0:
        pytest.skip("BMC integration tests run as root (make test does)")
    for tool in ("ipmi_sim", "ipmitool"):
        if shutil.which(tool) is None:
            pytest.skip("%s is missing: tools/setup-host --test installs it" % tool)


@contextmanager
def ipmi_sim(workdir, host="127.0.0.1", port=None, user="admin", password="Sim-Pw-4471",
             serial="SIM0001", macs=("52:54:00:aa:00:01",), power=False, sol=None,
             guid="a123456789abcdefa123456789abcdef"):
    """A running ``ipmi_sim``; yields an :class:`IpmiSim`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sim = IpmiSim(workdir, host, port or free_udp_port(host), user, password, serial,
                  list(macs), guid)
    sim.write_config(sol=sol)
    sim.set_power(power)
    try:
        sim.start()
        yield sim
    finally:
        sim.stop()


def needs_sushy_emulator():
    if os.geteuid() != 0:
        pytest.skip("BMC integration tests run as root (make test does)")
    exe = Path(sys.executable).with_name("sushy-emulator")
    if not exe.exists():
        pytest.skip("sushy-emulator is missing: tools/setup-host --test installs sushy-tools")
    return exe


def free_tcp_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def sushy_emulator(workdir, systems, user="admin", password="Rf-Pw-5513", host="127.0.0.1"):
    """sushy-tools' Redfish emulator with its fake driver and basic auth, on loopback.

    ``systems``: list of dicts (uuid, name, power_state, nics).  Yields the base URL.
    """
    import bcrypt
    import json
    import urllib.error
    import urllib.request

    exe = needs_sushy_emulator()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_tcp_port(host)
    (workdir / "htpasswd").write_text("%s:%s\n" % (user, bcrypt.hashpw(
        password.encode(), bcrypt.gensalt(rounds=4)).decode()))
    systems = [dict({"external_notifier": False}, **s) for s in systems]
    (workdir / "emulator.conf").write_text(textwrap.dedent("""\
        SUSHY_EMULATOR_LISTEN_IP = {host!r}
        SUSHY_EMULATOR_LISTEN_PORT = {port}
        SUSHY_EMULATOR_FAKE_DRIVER = True
        SUSHY_EMULATOR_AUTH_FILE = {auth!r}
        SUSHY_EMULATOR_STATE_DIR = {state!r}
        SUSHY_EMULATOR_FAKE_SYSTEMS = json.loads({systems!r})
        """).replace("SUSHY_EMULATOR_LISTEN_IP", "import json\nSUSHY_EMULATOR_LISTEN_IP", 1)
        .format(host=host, port=port, auth=str(workdir / "htpasswd"),
                state=str(workdir / "state"), systems=json.dumps(systems)))
    url = "http://%s:%d" % (host, port)
    log = open(workdir / "emulator.log", "wb")
    proc = subprocess.Popen([str(exe), "--config", str(workdir / "emulator.conf")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("sushy-emulator exited: %s" %
                                   (workdir / "emulator.log").read_text()[-2000:])
            try:
                urllib.request.urlopen(url + "/redfish/v1/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break                   # 401: up, and asking for credentials
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sushy-emulator on %s did not answer" % url)
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
