"""The console's "Reset this node to its factory state" headless (Textual's pilot), on the
reset's own code (``firstboot/factoryreset.py``) over a member of an in-memory cluster:
behind root's password, what happens shown first, the host name typed to confirm, each
phase on the screen; a wrong name changes nothing; a node that cannot be reset is told
why in one line and no screen opens."""

import types

import pytest
from pilot import screen_text
from test_firstboot_factoryreset import assert_factory_state, names, node  # noqa: F401
from test_nodeagent_consoleactions import Operator, agent, run  # noqa: F401 - the fixture

from rackforge import paths
from rackforge.firstboot import factoryreset
from rackforge.nodeagent import console, consolegate, consolereset


@pytest.fixture
def member(node, agent, monkeypatch):    # noqa: F811 - pytest's fixtures by name
    """``node`` (a member of three), its reset run through the console."""
    monkeypatch.setattr(console.ConsoleApp, "reset_env", lambda app: node.env)
    return node


async def open_reset(op):
    await op.action("reset", "correct horse")


def test_the_name_typed_resets_the_member(member, agent):       # noqa: F811
    async def script(pilot):
        op = Operator(pilot)
        await open_reset(op)
        assert isinstance(op.screen, consolereset.ResetScreen)
        shown = screen_text(op.app)
        assert "node node-1 leaves cluster rack1: its records and its etcd member go" in shown
        assert "kept: the host name node-1, the management network" in shown
        assert member.calls == []                   # nothing before the confirmation
        await op.type("confirm", "node-1")
        op.screen.query_one("#reset").press()
        await op.settle()
        assert "reset: first boot waits for join settings" in op.problems()

    run(agent, script)
    assert names(member.reg) == ["node-2", "node-3"]
    assert_factory_state(member)


def test_a_wrong_name_changes_nothing(member, agent):       # noqa: F811
    async def script(pilot):
        op = Operator(pilot)
        await open_reset(op)
        await op.type("confirm", "node-2")
        op.screen.query_one("#reset").press()
        await op.settle()
        assert "type the host name node-1 exactly" in op.problems()

    run(agent, script)
    assert member.calls == [] and names(member.reg) == ["node-1", "node-2", "node-3"]
    assert (paths.state_dir() / "node.json").exists()
    assert not factoryreset.record_path().exists()


def test_no_password_no_reset(member, agent):       # noqa: F811
    async def script(pilot):
        op = Operator(pilot)
        await pilot.press("f2")
        await op.pause()
        await op.choose("actions", "reset")
        await op.pause()
        await pilot.press("escape")
        await op.pause()
        assert op.screen.TITLE == "actions"

    run(agent, script, gate=consolegate.Gate(stored=lambda: "!"))
    assert member.calls == [] and names(member.reg) == ["node-1", "node-2", "node-3"]


def test_a_controller_its_clusters_cannot_spare_is_told_why_not(member, agent,  # noqa: F811
                                                                monkeypatch):
    from rackforge.nodeagent import depart
    grastate = member.root / "var/lib/mysql/grastate.dat"
    grastate.parent.mkdir(parents=True)
    grastate.write_text("seqno: 1\n")
    refused = depart.PeersNotReady(what="Galera", problems="mariadb on node-3 is failed")
    monkeypatch.setattr(factoryreset, "_departure", lambda reg, ident, env: types.
                        SimpleNamespace(refusal=lambda steps: refused))

    async def script(pilot):
        op = Operator(pilot)
        await open_reset(op)
        assert op.screen.TITLE == "actions"
        assert "factory reset: the other controllers must run Galera before this one " \
            "leaves them: mariadb on node-3 is failed" in op.problems()

    run(agent, script)
    assert member.calls == [] and names(member.reg) == ["node-1", "node-2", "node-3"]


def test_a_phase_that_fails_is_one_line_and_resumes(member, agent):     # noqa: F811
    member.refuse = {"rackforge-etcd.service"}
    member.active = {"rackforge-etcd.service"}

    async def script(pilot):
        op = Operator(pilot)
        await open_reset(op)
        await op.type("confirm", "node-1")
        op.screen.query_one("#reset").press()
        await op.settle()
        assert "factory reset: phase stop failed" in op.problems()
        assert "goes on where it stopped at the next boot" in op.problems()

    run(agent, script)
    assert factoryreset.read_record()["phases"]["stop"] == "started"


def test_the_console_runs_the_resets_own_systemctl_calls(monkeypatch):
    """The console's own ``systemctl`` (the one its reset is given outside the tests) takes
    every call the reset makes: its disables leave the SysV scripts alone."""
    calls = []
    monkeypatch.setattr("rackforge.systemd.systemctl",
                        lambda *args, **kw: calls.append((args, kw)))
    app = types.SimpleNamespace()
    app.systemctl = lambda *args, **kw: console.ConsoleApp.systemctl(app, *args, **kw)
    env = console.ConsoleApp.reset_env(app)
    factoryreset._disable(env, ["mariadb.service"], "stop")
    assert calls == [(("disable", "--now", "--no-reload", "mariadb.service"),
                      {"environ": {"SYSTEMCTL_SKIP_SYSV": "1"}}),
                     (("daemon-reload",), {})]
