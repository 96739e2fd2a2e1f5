"""The e2e and bench helpers of tests/lib/seedinstall.py: what they send to the seed and
how they read it back.  No QEMU, no SSH, no namespace: commands are recorded."""

import json
import subprocess
from types import SimpleNamespace

import pytest
import seedinstall as si

from rackforge.firstboot.inventory import NetworkInterface
from rackforge.installer import answer, plan

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGc2Ip5ADyFd7XzbnK0b8MHH1cz3Yl4H5oGCAjDLo5Ni e2e"


def test_the_seed_answer_is_a_valid_answer_file(tmp_path):
    path = tmp_path / "answer.yaml"
    path.write_text(si.seed_answer(KEY))
    answers = answer.load(path)
    answers.check()
    boot = answers.bootstrap()
    assert boot["seed"] is True and boot["cluster"] == "rack1"
    assert boot["management"] == {"interface": "mac:52:54:00:5a:00:01",
                                  "address": "10.213.88.10/24",
                                  "check": {"peer": "10.213.88.1"}}
    assert "gateway" not in boot["management"]     # no default route on the boot interface
    assert answers.hostname == "rack1-seed" and list(answers.ssh_authorized_keys) == [KEY]
    assert answers.disk.to_dict()["match"] == {"serial": "RFSEED01"}


def test_the_install_guests_nic_satisfies_the_plans_nic_check():
    network = {"interface": "mac:" + si.SEED_MAC, "address": si.SEED_ADDRESS + "/24"}
    guest = SimpleNamespace(interfaces=[NetworkInterface("enp0s3", si.SEED_MAC)])
    assert plan.nic_problems(network, guest) == []
    other = SimpleNamespace(interfaces=[NetworkInterface("enp0s3", "52:54:00:12:34:56")])
    assert len(plan.nic_problems(network, other)) == 1


def test_the_install_guest_boots_the_iso_and_lets_grub_see_the_answer_disk(tmp_path):
    from guest import Guest

    guest = Guest(tmp_path / "g", firmware="bios")    # uefi: the same devices, OVMF's files
    guest.devices += si.install_devices("/b/min.iso", "/t/seed.qcow2", "/t/answer.img")
    guest.add_user_nic(mac=si.SEED_MAC)
    cmd = guest.command()
    devices = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-device"]
    drives = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-drive"]
    assert "ide-cd,drive=seedcd,bus=ide.2,bootindex=0" in devices
    assert "scsi-hd,bus=seedscsi.0,drive=seedanswer,serial=RFANSWER01,bootindex=1" in devices
    assert "scsi-hd,bus=seedscsi.0,drive=seedtarget,serial=RFSEED01" in devices
    assert "file=/t/seed.qcow2,if=none,id=seedtarget,format=qcow2" in drives  # in place
    assert not any("snapshot" in d for d in drives) and "-boot" not in cmd
    assert any(d.startswith("virtio-net-pci") and "mac=52:54:00:5a:00:01" in d
               for d in devices)
    ids = [d.split("id=")[1].split(",")[0] for d in drives if "id=" in d]
    assert len(ids) == len(set(ids))


def test_bmc_targets_and_the_rack_up_line():
    assert si.bmc_target(["10.213.88.1:6231"]) == "10.213.88.1:6231"
    assert si.bmc_target(["10.213.88.1:6231", "10.213.88.1:6232"]) == "10.213.88.1:6231-6232"
    for bad in (["10.213.88.1:6231", "10.213.88.1:6233"],
                ["10.213.88.1:6231", "10.213.88.2:6232"]):
        with pytest.raises(ValueError):
            si.bmc_target(bad)
    assert si.rack_up_command(["10.213.88.1:6231", "10.213.88.1:6232"], "enp0s2") == (
        "rackforge rack up 10.213.88.1:6231-6232 --user admin --password-file "
        "/root/bmc-password --interface enp0s2 --mode full --range "
        "10.213.88.100,10.213.88.150 --deadline 75m --reboot-wait 12m")


def test_the_rack_up_line_parses_as_rack_up_takes_it():
    from rackforge.bringup import cli as bringup_cli
    from rackforge.bringup import targets
    from rackforge.cli import build_parser

    words = si.rack_up_command(["10.213.88.1:6231", "10.213.88.1:6232"], "enp0s2").split()
    assert words[:3] == ["rackforge", "rack", "up"]
    args = build_parser().parse_args(words[1:])
    assert targets.expand(args.bmcs) == [("10.213.88.1", 6231), ("10.213.88.1", 6232)]
    assert (args.interface, args.mode, args.range_) == ("enp0s2", "full",
                                                        "10.213.88.100,10.213.88.150")
    assert args.bundle is None                  # the seed's own: /var/lib/rackforge/bundle
    assert bringup_cli.parse_duration(args.deadline) > si.BRINGUP_TIMEOUT
    assert bringup_cli.parse_duration(args.reboot_wait) == 12 * 60


def test_the_seeds_nic_is_found_by_node_01s_mac():
    links = [{"ifname": "lo", "address": "00:00:00:00:00:00"},
             {"ifname": "enp0s2", "address": "52:54:00:5A:00:01"}]
    assert si.nic_with_mac(links, si.SEED_MAC) == "enp0s2"
    with pytest.raises(AssertionError):
        si.nic_with_mac(links[:1], si.SEED_MAC)


def test_state_changes_are_said_once_each():
    seen = {}
    rows = [{"id": "a", "name": "rack1-seed", "bmc": None, "state": "active"},
            {"id": "b", "name": "node-rfvirt-02", "bmc": "10.213.88.1:6231",
             "state": "booting"}]
    assert len(si.state_changes(rows, seen)) == 2
    assert si.state_changes(rows, seen) == []
    rows[1].update(state="failed", error="install: no disk")
    (line,) = si.state_changes(rows, seen)
    assert line.split()[:3] == ["node-rfvirt-02", "10.213.88.1:6231", "failed:"]
    assert line.endswith("install: no disk")


def test_console_text_loses_its_escapes():
    raw = "\x1b[2J\x1b[1;1HrackForge\r\n\x1b[0mlogin: \x1b(B"
    assert si.clean_console(raw) == "rackForge\nlogin: "
    assert si.tail("a\nb\nc\n", 2) == "b\nc"


class FakeRack:
    def __init__(self, tmp_path, bmc_netns="rf-virt-abc123"):
        self.password_file = tmp_path / "bmc-password"
        self.password_file.write_text("Secret-BMC-pw1\n")
        self.info = {"netns": "rf-virt-abc123", "bmc_netns": bmc_netns, "nodes": [
            {"name": "node-0%d" % i, "mac": "52:54:00:5a:00:0%d" % i,
             "bmc": "10.213.88.1:623%d" % (i - 1), "dir": str(tmp_path / ("n%d" % i)),
             "console": str(tmp_path / ("console-%d.log" % i))} for i in (1, 2, 3)]}
        self.calls = []

    def bmc(self, *args, bmcs=None, timeout=120):
        self.calls.append((args, bmcs))
        return subprocess.CompletedProcess(args, 0, "ok", "")


def _seed(tmp_path, said=None):
    return si.SeedRack(FakeRack(tmp_path), tmp_path / "id_ed25519", tmp_path,
                       say=(said.append if said is not None else lambda line: None))


def test_ssh_runs_from_the_racks_namespace_with_the_tests_key(tmp_path):
    argv = _seed(tmp_path).ssh_argv("rackforge rack status --json")
    assert argv[:4] == ["ip", "netns", "exec", "rf-virt-abc123"]
    assert argv[4] == "ssh" and "BatchMode=yes" in argv and "StrictHostKeyChecking=no" in argv
    assert argv[argv.index("-i") + 1] == str(tmp_path / "id_ed25519")
    assert argv[-2:] == ["root@10.213.88.10", "rackforge rack status --json"]


def test_the_bmc_password_goes_through_stdin_only(tmp_path, monkeypatch):
    seed = _seed(tmp_path)
    calls = []

    def run(argv, stdin=None, **kw):
        calls.append((argv, stdin.read() if hasattr(stdin, "read") else None))
        return subprocess.CompletedProcess(argv, 0, "600\n" if "stat" in argv[-1] else "", "")
    monkeypatch.setattr(si.subprocess, "run", run)
    seed.copy_password()
    (copy, sent), (stat, _) = calls
    assert sent == b"Secret-BMC-pw1\n"
    assert "Secret-BMC-pw1" not in " ".join(copy + stat)
    assert copy[-1].startswith("umask 077 && cat > /root/bmc-password")


def test_wait_active_says_each_change_and_returns_when_all_are_active(tmp_path, monkeypatch):
    said = []
    seed = _seed(tmp_path, said)
    states = [None, ["active", "booting", "booting"], ["active", "installing", "booting"],
              ["active", "active", "joining"], ["active", "active", "active"]]

    def status():
        row = states.pop(0)
        return None if row is None else {"nodes": [
            {"id": str(i), "name": "n%d" % i, "bmc": None, "state": s}
            for i, s in enumerate(row)]}
    monkeypatch.setattr(seed, "rack_status", status)
    found = seed.wait_active(3, timeout=60, poll=0)
    assert [r["state"] for r in found["nodes"]] == ["active"] * 3
    assert len(said) == 3 + 1 + 2 + 1 and not states


def test_wait_active_stops_at_a_failed_node_or_an_early_rack_up_exit(tmp_path, monkeypatch):
    seed = _seed(tmp_path)
    monkeypatch.setattr(seed, "rack_status", lambda: {"nodes": [
        {"id": "1", "name": "n1", "bmc": None, "state": "failed", "error": "disk"}]})
    with pytest.raises(AssertionError, match="n1: disk"):
        seed.wait_active(1, timeout=60, poll=0)

    monkeypatch.setattr(seed, "rack_status", lambda: None)
    seed.rack_up = SimpleNamespace(poll=lambda: 2, output=lambda: "rack up: refused\n")
    with pytest.raises(AssertionError, match="rack up exited 2"):
        seed.wait_active(3, timeout=60, poll=0)


def test_wait_console_reads_after_an_offset_and_fails_on_a_panic(tmp_path):
    seed = _seed(tmp_path)
    log = tmp_path / "console-2.log"
    log.write_text("old boot\nlogin:\n")
    since = seed.console_size("node-02")
    with open(log, "a") as f:
        f.write("Booting from Hard Disk...\nrackforge 1 appliance\nnode login: ")
    m = seed.wait_console("node-02", r"appliance[\s\S]*?login:", 5, since=since)
    assert m.group(0).endswith("login:")
    assert "old boot" not in seed.console("node-02", since)
    with open(log, "a") as f:
        f.write("\nKernel panic - not syncing: VFS\n")
    with pytest.raises(AssertionError, match="panicked"):
        seed.wait_console("node-02", r"never", 5)
    with open(log, "a") as f:
        f.write("rackforge installer: installed to /dev/vda (by-path:pci-0000:00:04.0) in "
                "412 s; rebooting into it\n")
    assert seed.installed_seconds("node-02") == 412
    assert seed.installed_seconds("node-03") is None


def test_bmc_commands_go_to_the_named_nodes_bmcs(tmp_path):
    seed = _seed(tmp_path)
    seed.bmc("power", "cycle", nodes=["node-02"])
    assert seed.rack.calls == [(("power", "cycle"), ["10.213.88.1:6231"])]


def test_boots_are_keyed_by_mac(tmp_path, monkeypatch):
    seed = _seed(tmp_path)
    out = {"server": None, "boots": [{"mac": "52:54:00:5a:00:02", "count": 3,
                                      "decision": "local"}], "registry_error": None}
    monkeypatch.setattr(seed, "ssh", lambda cmd, **kw: SimpleNamespace(
        stdout=json.dumps(out), returncode=0))
    assert seed.boots()["52:54:00:5a:00:02"]["count"] == 3


def test_rack_up_run_keeps_its_output(tmp_path):
    run = si.RackUpRun(["sh", "-c", "echo one; echo two >&2; exit 3"], tmp_path / "up.log")
    assert run.wait(30) == 3
    assert run.output() == "one\ntwo\n"
    run.stop()
    assert run.output() == "one\ntwo\n"


def test_report_prints_consoles_and_survives_an_unreachable_seed(tmp_path, monkeypatch):
    said = []
    seed = _seed(tmp_path, said)
    (tmp_path / "console-1.log").write_text("\x1b[0mfirst boot complete: node s is controller\n")
    seed.rack.status = lambda: {"nodes": []}

    def unreachable(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, 60)
    monkeypatch.setattr(seed, "ssh", unreachable)
    seed.report()
    text = "\n".join(said)
    assert "first boot complete: node s is controller" in text
    assert "could not be asked" in text
