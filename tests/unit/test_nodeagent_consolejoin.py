"""The console's "Join with a new token" headless (Textual's pilot), on first boot's own
code (``firstboot/rejoin.py``) over a node whose join failed: behind root's password,
the settings shown and corrected, the file written and first boot started again; a
member refused in one line; and with no agent yet, the status page says what first
boot says."""

import json

import pytest
import yaml
from pilot import run_app, screen_text
from test_firstboot_rejoin import NEW_TOKEN, OLD, PIN, node  # noqa: F401 - the fixture
from test_nodeagent_consoleactions import Operator, agent, run  # noqa: F401 - the fixture

from rackforge.firstboot import journal, rejoin
from rackforge.nodeagent import consolejoin, consolegate, localapi


@pytest.fixture
def stuck(node, agent, monkeypatch):     # noqa: F811 - pytest's fixtures by name
    """The node with the join that failed (``node``), served by ``agent``'s local API."""
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(node.where))
    return node


async def open_join(op):
    await op.action("join", "correct horse")


def test_new_settings_behind_the_password_restart_first_boot(stuck, agent, caplog):  # noqa: F811
    async def script(pilot):
        op = Operator(pilot)
        await open_join(op)
        assert isinstance(op.screen, consolejoin.JoinScreen)
        shown = screen_text(op.app)
        assert "First boot: not joined: first boot step 'join' failed" in shown
        assert "Its join step failed: join token abcdef is expired" in shown
        assert OLD["join"]["token"] not in shown
        assert op.screen.query_one("#endpoints").value == "https://10.0.0.5:9443"
        assert op.screen.query_one("#pin").value == PIN
        await op.type("endpoints", "https://10.0.0.6:9443, https://10.0.0.7:9443")
        await op.type("token", NEW_TOKEN)
        assert NEW_TOKEN not in screen_text(op.app) and "*" * len(NEW_TOKEN) in \
            screen_text(op.app)
        op.screen.query_one("#join").press()
        await op.settle()
        assert "first boot runs again with the new settings" in op.problems()
        assert op.screen.query_one("#token").value == ""

    app = run(agent, script)
    written = yaml.safe_load(stuck.where.read_text())["join"]
    assert written == {"endpoints": ["https://10.0.0.6:9443", "https://10.0.0.7:9443"],
                       "token": NEW_TOKEN, "ca_sha256": PIN}
    assert app.done == [("systemctl", "stop", rejoin.UNIT),
                        ("systemctl", "reset-failed", rejoin.UNIT),
                        ("systemctl", "start", "--no-block", rejoin.UNIT)]
    assert NEW_TOKEN not in caplog.text
    assert "console: join settings replaced (endpoints https://10.0.0.6:9443, " \
           "https://10.0.0.7:9443)" in caplog.text


def test_no_password_no_join(stuck, agent):       # noqa: F811
    async def script(pilot):
        op = Operator(pilot)
        await pilot.press("f2")
        await op.pause()
        await op.choose("actions", "join")
        await op.pause()
        await pilot.press("escape")
        await op.pause()
        assert op.screen.TITLE == "actions"

    app = run(agent, script, gate=consolegate.Gate(stored=lambda: "!"))
    assert app.done == [] and yaml.safe_load(stuck.where.read_text()) == OLD


def test_a_bad_pin_is_one_line_and_nothing_changes(stuck, agent):      # noqa: F811
    async def script(pilot):
        op = Operator(pilot)
        await open_join(op)
        await op.type("token", NEW_TOKEN)
        await op.type("pin", "sha256:12")
        op.screen.query_one("#join").press()
        await op.settle()
        assert "'join.ca_sha256' is not a CA pin" in op.problems()
        await op.type("token", "")
        op.screen.query_one("#join").press()
        await op.settle()
        assert "the token is missing" in op.problems()

    app = run(agent, script)
    assert app.done == [] and yaml.safe_load(stuck.where.read_text()) == OLD


def test_a_member_is_told_why_not_and_nothing_opens(stuck, agent):      # noqa: F811
    journal.done_marker().write_text(json.dumps({"finished": 1}))

    async def script(pilot):
        op = Operator(pilot)
        await open_join(op)
        assert op.screen.TITLE == "actions"
        assert "join: this node completed first boot: it is a member; to join a cluster " \
               "again, reset it to its factory state first" in op.problems()

    app = run(agent, script)
    assert app.done == [] and yaml.safe_load(stuck.where.read_text()) == OLD


def test_with_no_agent_the_status_page_says_what_first_boot_says(stuck, tmp_path):
    from rackforge.nodeagent import console
    seen = []

    async def script(pilot):
        seen.append(screen_text(pilot.app))

    async def first(app):
        await app.workers.wait_for_complete()

    client = localapi.Client(tmp_path / "no-agent.sock")
    run_app(console.ConsoleApp(client, refresh_every=3600,
                               gate=consolegate.Gate(stored=lambda: "!")), script,
            settle=first)
    assert "first boot: not joined: first boot step 'join' failed" in seen[0]


def test_a_seed_that_began_is_told_why_not(stuck, agent):      # noqa: F811
    (stuck.steps / "03-join.json").unlink()
    (stuck.steps / "03-seed.json").write_text(json.dumps({"step": "seed",
                                                          "status": "started"}))

    async def script(pilot):
        op = Operator(pilot)
        await open_join(op)
        assert op.screen.TITLE == "actions"
        assert "join: this node began creating a cluster" in op.problems()

    app = run(agent, script)
    assert app.done == [] and yaml.safe_load(stuck.where.read_text()) == OLD


def test_a_bug_in_the_join_is_one_line_without_the_token(
        stuck, agent, caplog, monkeypatch):      # noqa: F811
    from rackforge.nodeagent import console

    def broken(self, endpoints, token, pin):
        raise TypeError("unhashable: %s" % token)       # a bug that quotes its input

    async def script(pilot):
        op = Operator(pilot)
        await open_join(op)
        await op.type("token", NEW_TOKEN)
        op.screen.query_one("#join").press()
        await op.settle()
        assert "not applied: TypeError (a bug)" in op.problems()
        assert NEW_TOKEN not in screen_text(op.app)

    monkeypatch.setattr(console.ConsoleApp, "rejoin", broken)
    run(agent, script)
    assert NEW_TOKEN not in caplog.text and "TypeError" in caplog.text
