"""The virtual rack's pure parts: node plan, QEMU command lines, BMC logic, status table."""

import struct

import pytest

from rackforge.virt import bmc as vbmc
from rackforge.virt import cli as vcli
from rackforge.virt import rack
from rackforge.virt.guest import GuestSpec, mac_for, qemu_command


def spec(tmp_path, **kw):
    return rack.plan(2, "rf-virt-abc123", tmp_path, **kw)[0]


def test_macs_are_fixed_and_hex():
    assert mac_for(1) == "52:54:00:5a:00:01"
    assert mac_for(10) == "52:54:00:5a:00:0a"
    assert mac_for(254) == "52:54:00:5a:00:fe"
    for bad in (0, 255):
        with pytest.raises(ValueError):
            mac_for(bad)


def test_plan_numbers_nodes_ports_and_taps(tmp_path):
    nodes = rack.plan(3, "rf-virt-abc123", tmp_path, memory_mib=512)
    assert [n.name for n in nodes] == ["node-01", "node-02", "node-03"]
    assert [n.bmc_port for n in nodes] == [6230, 6231, 6232]
    assert {n.bmc_address for n in nodes} == {"127.0.0.1"}
    assert len({n.tap for n in nodes}) == 3
    assert all(len(n.tap) <= 15 for n in nodes)
    assert nodes[2].workdir == str(tmp_path / "nodes" / "node-03")
    assert nodes[0].password_file == str(tmp_path / "bmc-password")
    assert nodes[0].memory_mib == 512


@pytest.mark.parametrize("kw", [dict(count=0), dict(count=255), dict(firmware="coreboot"),
                                dict(memory_mib=64), dict(base_port=65535)])
def test_plan_refuses_bad_settings_in_one_line(tmp_path, kw):
    args = dict(count=2, netns="ns", vdir=tmp_path)
    args.update(kw)
    with pytest.raises(rack.VirtError) as e:
        rack.plan(**args)
    assert "\n" not in str(e.value) and str(e.value).startswith("virtual rack: ")


def test_spec_round_trips_through_node_json(tmp_path):
    s = spec(tmp_path)
    s.dir.mkdir(parents=True)
    assert GuestSpec.load(s.save()) == s


def _arg_after(cmd, flag):
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


def test_qemu_command_network_first(tmp_path):
    s = spec(tmp_path)
    cmd = qemu_command(s, "network")
    assert cmd[:4] == ["ip", "netns", "exec", "rf-virt-abc123"]
    assert _arg_after(cmd, "-accel") == ["tcg"]
    assert _arg_after(cmd, "-m") == ["1024"]
    assert _arg_after(cmd, "-machine")[0].startswith("q35")
    devices = _arg_after(cmd, "-device")
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:5a:00:01,bootindex=1" in devices
    assert "virtio-blk-pci,drive=disk0,bootindex=2" in devices
    assert "tap,id=net0,ifname=%s,script=no,downscript=no" % s.tap in _arg_after(cmd, "-netdev")
    assert any(str(s.console_log) in c for c in _arg_after(cmd, "-chardev"))
    assert not any("pflash" in d for d in _arg_after(cmd, "-drive"))


@pytest.mark.parametrize("device", ["hd", "default"])
def test_qemu_command_disk_first(tmp_path, device):
    devices = _arg_after(qemu_command(spec(tmp_path), device), "-device")
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in devices
    assert any(d.startswith("virtio-net-pci") and d.endswith("bootindex=2") for d in devices)


def test_qemu_command_uefi_uses_the_nodes_own_variables(tmp_path):
    s = spec(tmp_path, firmware="uefi")
    drives = _arg_after(qemu_command(s), "-drive")
    assert any("readonly=on" in d and "OVMF_CODE" in d for d in drives)
    assert "if=pflash,format=raw,file=%s" % s.ovmf_vars in drives


def test_qemu_command_refuses_unknown_devices(tmp_path):
    with pytest.raises(ValueError):
        qemu_command(spec(tmp_path), "optical")


class FakeGuest:
    def __init__(self, fail=False):
        self.on, self.started, self.fail = False, [], fail

    def running(self):
        return self.on

    def start(self, boot_device):
        if self.fail:
            from rackforge.virt.guest import GuestStartFailed
            raise GuestStartFailed("no")
        self.on = True
        self.started.append(boot_device)

    def stop(self):
        self.on = False

    def shutdown(self):
        self.on = False


def fake_bmc(tmp_path, guest=None):
    b = vbmc.VirtBmc.__new__(vbmc.VirtBmc)      # no socket: the logic only
    b.spec = spec(tmp_path)
    b.spec.dir.mkdir(parents=True, exist_ok=True)
    b.guest = guest or FakeGuest()
    return b


def test_bmc_power_and_boot_device_drive_the_guest(tmp_path):
    b = fake_bmc(tmp_path)
    assert b.get_power_state() == "off"
    assert b.get_boot_device() == "network"
    assert b.power_reset() == vbmc.CC_NOT_SUPPORTED_IN_STATE
    assert b.power_on() == 0 and b.get_power_state() == "on"
    assert b.power_on() == 0 and b.guest.started == ["network"]
    b.set_boot_device("hd")
    assert b.get_boot_device() == "hd"
    assert (b.spec.dir / "boot-device").read_text() == "hd\n"
    assert b.power_reset() == 0 and b.guest.started == ["network", "hd"]
    assert b.power_shutdown() == 0 and b.get_power_state() == "off"
    assert b.power_off() == 0
    with pytest.raises(NotImplementedError):
        b.set_boot_device("optical")


def test_bmc_reports_a_guest_that_would_not_start(tmp_path):
    b = fake_bmc(tmp_path, FakeGuest(fail=True))
    assert b.power_on() == vbmc.CC_UNSPECIFIED


def _open_session_request(auth_alg, tag=7, sid=b"\x01\x02\x03\x04"):
    body = bytes([tag, 0, 0, 0]) + sid
    body += bytes([0, 0, 0, 8, auth_alg, 0, 0, 0, 1, 0, 0, 8, 1, 0, 0, 0, 2, 0, 0, 8, 1, 0, 0, 0])
    return (bytes([6, 0, 0xFF, 7, 6, 0x10]) + bytes(8) + struct.pack("<H", len(body)) + body)


def test_sha256_proposals_are_refused_so_the_client_falls_back():
    refusal = vbmc.open_session_refusal(_open_session_request(3))
    assert refusal[:6] == bytes([6, 0, 0xFF, 7, 6, 0x11])
    assert refusal[16:] == bytes([7, vbmc.STATUS_INVALID_AUTH_ALGORITHM, 0, 0, 1, 2, 3, 4])
    assert struct.unpack("<H", refusal[14:16])[0] == 8
    assert vbmc.open_session_refusal(_open_session_request(1)) is None
    assert vbmc.open_session_refusal(vcli.AUTH_CAP_PING) is None
    assert vbmc.open_session_refusal(b"\x06") is None


def test_auth_capabilities_ping_checksums():
    msg = vcli.AUTH_CAP_PING[14:]
    assert (msg[0] + msg[1] + msg[2]) & 0xFF == 0
    assert sum(msg[3:]) & 0xFF == 0


def test_status_table(tmp_path):
    info = rack.rack_info("rf-virt-abc123", rack.plan(2, "rf-virt-abc123", tmp_path), 1, True,
                          [11, 12])
    for n, (power, boot, state) in zip(info["nodes"], [("on", "pxe", "up"),
                                                       ("off", "disk", "stopped")]):
        n.update(power=power, boot=boot, bmc_state=state)
    lines = vcli.format_table(info)
    assert lines[0].split() == ["NODE", "MAC", "BMC", "BMC-STATE", "POWER", "BOOT", "CONSOLE"]
    assert lines[1].split()[:6] == ["node-01", "52:54:00:5a:00:01", "127.0.0.1:6230", "up", "on",
                                    "pxe"]
    assert lines[2].split()[3:6] == ["stopped", "off", "disk"]
    assert info["nodes"][1]["bmc_pid"] == 12 and info["user"] == "admin"


def test_the_daemons_error_line_is_what_up_reports(tmp_path):
    log = open(tmp_path / "rack.log", "w+b")
    log.write(b"2026-01-01 10:00:00,000 INFO rackforge.virt.rack: rack of 2\n"
              b"2026-01-01 10:00:00,100 ERROR rackforge.virt.rack: virtual rack: 'ip netns add x'"
              b" failed: File exists\n"
              b"2026-01-01 10:00:00,200 INFO rackforge.virt.rack: rack down: stopping\n")
    assert vcli._daemon_error(log) == "'ip netns add x' failed: File exists"
    log.seek(0)
    log.truncate()
    assert vcli._daemon_error(log) == "no output"
