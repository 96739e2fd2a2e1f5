"""The agent's systemctl: a start or restart queued, then waited for a bounded time (a
slow unit never holds the pass up for systemd's whole start timeout)."""

import subprocess

import pytest

from rackforge import systemd
from rackforge.nodeagent import units


class Script:
    """systemctl answering ``show`` from a list of ActiveStates, one per call."""

    def __init__(self, states):
        self.states = list(states)
        self.calls = []
        self.now = 0.0

    def __call__(self, argv, **kw):
        self.calls.append(argv)
        out = ""
        if argv[1] == "show":
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            out = ("Id=%s\nLoadState=loaded\nActiveState=%s\n"
                   "UnitFileState=enabled\n" % (argv[-1], state))
        return subprocess.CompletedProcess(argv, 0, out, "")

    def clock(self):
        return self.now

    def sleep(self, s):
        self.now += s


def make(states):
    script = Script(states)
    return units.Systemd(run=script, clock=script.clock, sleep=script.sleep), script


def test_a_start_is_queued_and_returns_once_the_unit_is_up():
    sd, script = make(["inactive", "activating", "active"])
    sd.act("start", "nova-compute.service")
    assert script.calls[0] == ["systemctl", "start", "--no-block", "nova-compute.service"]
    assert script.now == 1.0


def test_a_unit_still_starting_is_left_to_its_check_after_the_settle_time():
    sd, script = make(["activating"])
    sd.act("restart", "nova-compute.service")
    assert script.now == pytest.approx(units.Systemd.settle)


def test_a_unit_that_fails_as_it_starts_is_one_error_line():
    sd, _ = make(["activating", "failed"])
    with pytest.raises(systemd.SystemctlFailed) as exc:
        sd.act("start", "nova-compute.service")
    assert "journalctl -u nova-compute.service" in str(exc.value)


def test_other_verbs_are_plain_systemctl():
    sd, script = make(["active"])
    sd.act("enable", "nova-compute.service")
    sd.act("start-nowait", "nova-compute.service")
    assert script.calls == [["systemctl", "enable", "nova-compute.service"],
                            ["systemctl", "start", "--no-block", "nova-compute.service"]]


def test_a_gated_unit_is_opened_before_its_start_and_closed_before_its_stop(tmp_path):
    """Only the agent starts MariaDB and RabbitMQ: the file their drop-ins' condition
    names is there before the agent's start and gone before its stop."""
    gates = tmp_path / "start"
    script = Script(["active"])
    seen = []           # (verb, the gates open when systemctl ran it)

    def run(argv, **kw):
        if argv[1] != "show":
            seen.append((argv[1], sorted(p.name for p in gates.glob("*"))))
        return script(argv, **kw)
    sd = units.Systemd(run=run, clock=script.clock, sleep=script.sleep, gates=gates)
    sd.act("start", "mariadb.service")
    sd.act("stop", "mariadb.service")
    sd.act("start-nowait", "rabbitmq-server.service")
    sd.act("start", "nova-compute.service")         # not gated: nothing written
    assert seen == [("start", ["mariadb.service"]), ("stop", []),
                    ("start", ["rabbitmq-server.service"]),
                    ("start", ["rabbitmq-server.service"])]


def test_a_gated_unit_seen_failed_is_closed_until_the_agent_starts_it_again(tmp_path):
    """MariaDB died (or its start failed): a unit that wants it and restarts must not
    start it behind the agent's back."""
    gates = tmp_path / "start"
    script = Script(["active"])
    sd = units.Systemd(run=script, clock=script.clock, sleep=script.sleep, gates=gates)
    sd.act("start-nowait", "mariadb.service")
    assert (gates / "mariadb.service").exists()
    script.states = ["active"]
    sd.states(["mariadb.service"])
    assert (gates / "mariadb.service").exists()
    script.states = ["failed"]
    sd.states(["mariadb.service"])
    assert not (gates / "mariadb.service").exists()
