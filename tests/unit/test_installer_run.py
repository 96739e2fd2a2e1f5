"""The install boot's run: which consoles hear it, the answer text checked with its
source named, the answer's own disk left out, the TUI started when there is no answer
file, and one FAILED line (no reboot) when something is wrong."""

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from inventory_samples import load

from rackforge.firstboot import inventory

from rackforge.installer import answer, run, sources

SEED = """version: 1
hostname: node1
disk: {match: {size: largest}}
network: {interface: eth0, address: 10.0.0.11/24, gateway: 10.0.0.1}
cluster: {create: {name: rack1, vip: 10.0.0.100}}
"""


def test_the_kernel_console_list_maps_tty0_to_tty1_and_keeps_the_serial_line(tmp_path):
    active = tmp_path / "class" / "tty" / "console" / "active"
    active.parent.mkdir(parents=True)
    active.write_text("tty0 ttyS0\n")
    assert run.consoles(tmp_path) == ["/dev/tty1", "/dev/ttyS0"]
    assert run.consoles(tmp_path / "none") == ["/dev/tty1"]
    assert run.console_args("boot=live console=tty0 console=ttyS0,115200n8 quiet") == \
        "console=tty0 console=ttyS0,115200n8"


def test_progress_says_each_tenth_once(tmp_path):
    out = io.StringIO()
    c = run.Console(ttys=[], stream=out)
    for f in (0.0, 0.05, 0.12, 0.13, 0.5, 0.99):
        c.progress("copy", f, "")
    c.progress("copy", 1.0, "copy done")
    assert out.getvalue().splitlines() == [
        "rackforge installer: copy 10%", "rackforge installer: copy 50%",
        "rackforge installer: copy 90%", "rackforge installer: copy done"]


def test_answer_text_is_checked_with_its_source_and_line_named():
    found = sources.Found(SEED, "the partition labelled RF-ANSWER (/dev/sdc1)", "/dev/sdc1")
    answers = run.answers_of(found)
    assert answers.hostname == "node1" and answers.mode == "create"
    bad = sources.Found(SEED.replace("hostname: node1", "hostnme: node1"), found.source)
    with pytest.raises(answer.AnswerInvalid) as err:
        run.answers_of(bad)
    text = str(err.value)
    assert "the partition labelled RF-ANSWER (/dev/sdc1)" in text and "hostnme" in text
    with pytest.raises(answer.AnswerUnreadable):
        run.answers_of(sources.Found("version: [1\n", "the medium"))


def test_the_disk_an_answer_file_came_from_is_never_a_target(monkeypatch, tmp_path):
    shape = Path(__file__).parent / "samples" / "inventory" / "server-2nvme-4hdd"
    machine = inventory.collect(load(shape, tmp_path / "shape"))
    usb = next(d for d in machine.disks if d.bus == "usb")
    assert not usb.system
    before = {d.path for d in machine.disks if d.system}
    monkeypatch.setattr(sources, "parent_disk", lambda dev: usb.path)
    run.leave_out(machine, usb.path + "1")
    assert usb.system and {d.path for d in machine.disks if d.system} == before | {usb.path}


def test_no_answer_file_starts_the_tui_on_each_console_and_installs_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(run, "_log_to_file", lambda: None)
    monkeypatch.setattr(run, "consoles", lambda: ["/dev/tty1", "/dev/ttyS0"])
    monkeypatch.setattr(run.Console, "line", lambda self, text: calls.append(("line", text)))
    monkeypatch.setattr(sources, "find", lambda cmdline, run, seed: None)

    def fake_run(argv, **kw):
        calls.append(argv)
        return SimpleNamespace(returncode=0, stdout="", stderr="")
    assert run.main("boot=live rackforge.mode=install", run=fake_run) == 0
    assert ["systemctl", "start", "--no-block", "rackforge-installer-tui@tty1.service",
            "rackforge-installer-tui@ttyS0.service"] in calls
    assert not any(c[:2] == ["systemctl", "reboot"] for c in calls if isinstance(c, list))


def test_a_bad_answer_file_is_one_failed_line_and_no_reboot(monkeypatch):
    lines, calls = [], []
    monkeypatch.setattr(run, "_log_to_file", lambda: None)
    monkeypatch.setattr(run.Console, "line", lambda self, text: lines.append(text))
    found = sources.Found(SEED.replace("version: 1", "version: 7"), "the medium")
    monkeypatch.setattr(sources, "find", lambda cmdline, run, seed: found)
    code = run.main("boot=live", run=lambda argv, **kw: calls.append(argv))
    assert code != 0 and calls == []
    failed = [line for line in lines if line.startswith("FAILED: ")]
    assert len(failed) == 1 and "version" in failed[0]


def test_a_new_cluster_of_a_several_controller_profile_needs_its_vip_before_writing():
    from rackforge.installer import plan

    no_vip = answer.Answers.from_dict({
        "version": 1, "hostname": "node1", "disk": {"match": {"size": "largest"}},
        "network": {"interface": "eth0", "address": "10.0.0.11/24"},
        "cluster": {"create": {"name": "rack1"}}})
    problems = plan.vip_problems(no_vip, 3)
    assert [p.key for p in problems] == ["cluster.create.vip"]
    assert "profile has 3 controllers" in problems[0].text
    assert plan.vip_problems(no_vip, 1) == []
    assert plan.vip_problems(run.answers_of(sources.Found(SEED, "x")), 3) == []
