"""One systemctl helper: a failure is one line that names the unit it acted on."""

import subprocess

import pytest

from rackforge import systemd


def fake_run(returncode, stderr="", raises=None):
    calls = []

    def run(argv, **kw):
        calls.append(argv)
        if raises:
            raise raises
        return subprocess.CompletedProcess(argv, returncode, "", stderr)
    return run, calls


def test_success_passes_the_arguments_through():
    run, calls = fake_run(0)
    systemd.systemctl("enable", "--now", "rackforge-etcd.service", run=run)
    assert calls == [["systemctl", "enable", "--now", "rackforge-etcd.service"]]


@pytest.mark.parametrize("unit", ["rackforge-join.service", "rackforge-nodeagent.service"])
def test_a_failure_names_the_unit_and_the_last_line(unit):
    run, _ = fake_run(1, "Job failed.\nSee system logs for details.\n")
    with pytest.raises(systemd.SystemctlFailed) as err:
        systemd.systemctl("start", unit, run=run)
    assert str(err.value) == ("systemctl start %s failed: See system logs for details.; "
                              "see 'journalctl -u %s'" % (unit, unit))
    assert err.value.retryable


def test_a_hang_and_a_missing_systemctl_are_one_line_too():
    run, _ = fake_run(0, raises=subprocess.TimeoutExpired("systemctl", 5))
    with pytest.raises(systemd.SystemctlFailed, match="no answer within 5s"):
        systemd.systemctl("start", "x.service", run=run, timeout=5)
    run, _ = fake_run(0, raises=FileNotFoundError("systemctl"))
    with pytest.raises(systemd.SystemctlFailed, match="not installed"):
        systemd.systemctl("start", "x.service", run=run)


def test_added_environment_reaches_systemctl_and_nothing_else_changes(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin")
    seen = []

    def run(argv, **kw):
        seen.append(kw.get("env"))
        return subprocess.CompletedProcess(argv, 0, "", "")
    systemd.systemctl("disable", "x.service", run=run, environ={"SYSTEMCTL_SKIP_SYSV": "1"})
    systemd.systemctl("disable", "x.service", run=run)
    assert seen[0]["SYSTEMCTL_SKIP_SYSV"] == "1" and seen[0]["PATH"] == "/usr/sbin:/usr/bin"
    assert seen[1] is None                  # the caller's environment, inherited
