"""New join settings for a node that has not joined (``firstboot/rejoin.py``) and
``rackforge firstboot join``: refused for a member or a begun seed, validated by the
bootstrap file's rules before anything changes, the unit stopped before the file is
written and started after, the token never logged; then first boot resumes its join
step with the new token (the journal's own code, a recording join client)."""

import io
import json
import os
import stat
import types

import pytest
import yaml

from rackforge.firstboot import bootstrap, cli, journal, rejoin

PIN = "sha256:" + "ab" * 32
OLD = {"join": {"endpoint": "https://10.0.0.5:9443", "token": "abcdef.0123456789abcdef",
                "ca_sha256": PIN},
       "management": {"interface": "eno1", "address": "10.0.0.12/24", "gateway": "10.0.0.1"},
       "role": "compute"}
NEW_TOKEN = "ghijkl.0123456789ghijkl"


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A node whose bootstrap file is ``OLD`` and whose join step failed."""
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("RACKFORGE_ISSUE_DIR", str(tmp_path / "issue.d"))
    where = tmp_path / "etc" / "bootstrap.yaml"
    where.parent.mkdir()
    where.write_text(yaml.safe_dump(OLD))
    os.chmod(where, 0o600)
    steps = journal.steps_dir()
    steps.mkdir(parents=True)
    for i, (name, status) in enumerate([("inventory", "done"), ("network", "done"),
                                        ("join", "started")]):
        rec = {"step": name, "status": status,
               "intent": {"name": "node-2", "addresses": ["10.0.0.12"], "key": "k"}}
        if name == "join":
            rec["error"] = "join token abcdef is expired; ask for a new one"
        (steps / ("%02d-%s.json" % (i + 1, name))).write_text(json.dumps(rec))
    (tmp_path / "issue.d").mkdir()
    (tmp_path / "issue.d" / rejoin.BANNER).write_text(
        "rackforge first boot: not joined: first boot step 'join' failed: expired\n\n")
    return types.SimpleNamespace(where=where, steps=steps, calls=[])


def recorder(node, during=None, fails=()):
    """``systemctl`` recording each call with the file's token then; ``during(args)``
    runs inside a call (first boot finishing meanwhile), ``fails`` names verbs refused."""
    from rackforge.systemd import SystemctlFailed

    def systemctl(*args):
        token = None
        if node.where.exists():
            token = (yaml.safe_load(node.where.read_text()).get("join") or {}).get("token")
        node.calls.append((args, token))
        if during is not None:
            during(args)
        if args[0] in fails:
            raise SystemctlFailed(args=" ".join(args), unit=args[-1], detail="refused")
    return systemctl


def test_the_state_shows_the_settings_but_never_the_token(node):
    s = rejoin.state(node.where)
    assert s.member is None and s.seed is None
    assert s.endpoints == ["https://10.0.0.5:9443"] and s.ca_sha256 == PIN
    assert s.step == "started" and "expired" in s.error
    assert s.banner.startswith("not joined")
    assert OLD["join"]["token"] not in json.dumps(s.to_dict())


def test_new_settings_replace_the_join_keep_the_rest_and_restart_first_boot(node, caplog):
    boot = rejoin.apply(["https://10.0.0.6:9443/", "https://10.0.0.7:9443"], NEW_TOKEN,
                        PIN.upper().replace("SHA256", "sha256"), where=node.where,
                        systemctl=recorder(node))
    written = yaml.safe_load(node.where.read_text())
    assert written["join"] == {"endpoints": ["https://10.0.0.6:9443/", "https://10.0.0.7:9443"],
                               "token": NEW_TOKEN, "ca_sha256": PIN}
    assert written["management"] == OLD["management"] and written["role"] == "compute"
    assert stat.S_IMODE(node.where.stat().st_mode) == 0o600
    assert boot.join.endpoints == ["https://10.0.0.6:9443", "https://10.0.0.7:9443"]
    # stopped while the old file was there, started once the new one was
    assert [c[0] for c in node.calls] == [("stop", rejoin.UNIT), ("reset-failed", rejoin.UNIT),
                                          ("start", "--no-block", rejoin.UNIT)]
    assert node.calls[0][1] == OLD["join"]["token"] and node.calls[2][1] == NEW_TOKEN
    assert bootstrap.load(node.where, cmdline="").join.token == NEW_TOKEN
    assert NEW_TOKEN not in caplog.text and "https://10.0.0.6:9443" in caplog.text
    # the failed step stays as it was: first boot resumes there
    assert journal.records()["join"]["status"] == "started"


@pytest.mark.parametrize("endpoints, token, pin, says", [
    (["http://10.0.0.6:9443"], NEW_TOKEN, PIN, "'join.endpoints' holds something that is not"),
    ([], NEW_TOKEN, PIN, "'join.endpoints' is missing"),
    (["https://10.0.0.6:9443"], "not-a-token", PIN, "'join.token' is not a join token"),
    (["https://10.0.0.6:9443"], NEW_TOKEN, "sha256:12", "'join.ca_sha256' is not a CA pin"),
])
def test_bad_settings_are_one_line_and_nothing_changes(node, endpoints, token, pin, says):
    before = node.where.read_bytes()
    with pytest.raises(bootstrap.BootstrapError) as err:
        rejoin.apply(endpoints, token, pin, where=node.where, systemctl=recorder(node))
    assert says in str(err.value) and "\n" not in str(err.value)
    assert token not in str(err.value) or token == ""
    assert node.where.read_bytes() == before and node.calls == []


def test_a_file_that_cannot_be_written_is_left_as_it_was_and_first_boot_runs_on(
        node, monkeypatch):
    before = node.where.read_bytes()

    def full(path, data, mode=0o644, owner=None):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(rejoin, "atomic_write", full)
    with pytest.raises(rejoin.BootstrapUnwritable) as err:
        rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                     systemctl=recorder(node))
    assert "No space left on device" in str(err.value) and NEW_TOKEN not in str(err.value)
    assert err.value.retryable
    assert node.where.read_bytes() == before
    assert [c[0] for c in node.calls] == [("stop", rejoin.UNIT),
                                          ("start", "--no-block", rejoin.UNIT)]


def mark_join_done(node):
    path = node.steps / "03-join.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), status="done")))


@pytest.mark.parametrize("evidence, says", [
    ("join done", "joined a cluster (first boot step 'join' is done)"),
    ("done marker", "completed first boot"),
    ("node certificate", "holds a node certificate from its cluster"),
])
def test_a_member_is_refused(node, evidence, says):
    if evidence == "join done":
        mark_join_done(node)
    elif evidence == "done marker":
        journal.done_marker().write_text("{}")
    else:       # the join's answer written, its record not yet done (or reset since)
        (journal.steps_dir().parent.parent / "pki").mkdir()
        (journal.steps_dir().parent.parent / "pki" / "node.crt").write_text("cert")
    with pytest.raises(rejoin.AlreadyMember) as err:
        rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                     systemctl=recorder(node))
    assert says in str(err.value) and "factory-reset" in str(err.value)
    assert yaml.safe_load(node.where.read_text()) == OLD and node.calls == []


def test_a_join_that_finishes_while_first_boot_is_stopped_is_refused(node):
    def finishes(args):
        if args[0] == "stop":
            mark_join_done(node)
    with pytest.raises(rejoin.AlreadyMember):
        rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                     systemctl=recorder(node, during=finishes))
    assert yaml.safe_load(node.where.read_text()) == OLD
    assert [c[0] for c in node.calls] == [("stop", rejoin.UNIT),
                                          ("start", "--no-block", rejoin.UNIT)]


@pytest.mark.parametrize("evidence", ["seed step", "cluster CA"])
def test_a_node_that_began_seeding_is_refused(node, evidence):
    node.where.write_text(yaml.safe_dump({"seed": True, "cluster": "rack1"}))
    before = node.where.read_bytes()
    (node.steps / "03-join.json").unlink()
    if evidence == "seed step":
        (node.steps / "03-seed.json").write_text(json.dumps({"step": "seed",
                                                             "status": "started"}))
    else:
        ca_dir = journal.steps_dir().parent.parent / "ca"
        ca_dir.mkdir()
        (ca_dir / "ca.key").write_text("key")
    with pytest.raises(rejoin.BeganSeeding) as err:
        rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                     systemctl=recorder(node))
    assert "a cluster (rack1)" in str(err.value) and node.calls == []
    assert node.where.read_bytes() == before


def test_a_file_that_cannot_be_read_is_refused_not_replaced(node):
    node.where.write_bytes(b"join: {endpoint: [unclosed\n")
    before = node.where.read_bytes()
    with pytest.raises(rejoin.BootstrapUnreadable) as err:
        rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                     systemctl=recorder(node))
    assert "management network and role would be lost" in str(err.value)
    assert node.where.read_bytes() == before and node.calls == []


def test_no_file_yet_gets_one(node):
    node.where.unlink()
    rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                 systemctl=recorder(node))
    assert yaml.safe_load(node.where.read_text()) == {"join": {
        "endpoints": ["https://10.0.0.6:9443"], "token": NEW_TOKEN, "ca_sha256": PIN}}


def test_a_start_that_fails_says_the_file_is_written_and_what_to_run(node):
    with pytest.raises(rejoin.NotStarted) as err:
        rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                     systemctl=recorder(node, fails=("reset-failed", "start")))
    assert "run 'systemctl start rackforge-firstboot.service'" in str(err.value)
    assert yaml.safe_load(node.where.read_text())["join"]["token"] == NEW_TOKEN


def test_odd_values_in_the_file_or_journal_are_one_line(node):
    node.where.write_text(yaml.safe_dump(dict(OLD, join={"endpoint": 9443, "token": "x",
                                                         "ca_sha256": 5})))
    s = rejoin.state(node.where)
    assert s.endpoints == [] and s.ca_sha256 == ""
    (node.steps / "04-role.json").write_text('"x"')
    with pytest.raises(journal.JournalCorrupt):
        rejoin.state(node.where)


def test_a_seed_file_that_never_started_becomes_a_join(node):
    node.where.write_text(yaml.safe_dump({"seed": True, "cluster": "rack1", "vip": "10.0.0.100",
                                          "management": OLD["management"]}))
    (node.steps / "03-join.json").unlink()
    rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                 systemctl=recorder(node))
    assert set(yaml.safe_load(node.where.read_text())) == {"join", "management"}


def test_first_boot_resumes_its_join_with_the_new_token(node, monkeypatch):
    """The journal's own run over the agent's steps: the join step, left ``started`` by
    the expired token, runs again with the file's new token and the recorded intent."""
    from rackforge.firstboot import agent
    seen = []

    def join_client(**kw):
        seen.append((kw["token"], kw["name"]))
        raise StopStep()

    class StopStep(Exception):
        pass

    rejoin.apply(["https://10.0.0.6:9443"], NEW_TOKEN, PIN, where=node.where,
                 systemctl=recorder(node))
    boot = bootstrap.load(node.where, cmdline="")
    env = types.SimpleNamespace(join_client=join_client, apply_network=lambda spec: None)
    monkeypatch.setattr(agent, "node_key_pem", lambda: b"")
    monkeypatch.setattr("rackforge.cluster.ca.make_csr", lambda name, key: (b"csr", None))
    with pytest.raises(StopStep):
        agent.run(boot, env=env)
    assert seen == [(NEW_TOKEN, "node-2")]       # the recorded intent's name, not a new one


def test_the_command_reads_the_token_from_a_file_or_stdin_never_argv(node, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(node.where))
    monkeypatch.setattr("rackforge.systemd.systemctl", recorder(node))
    parser = __import__("argparse").ArgumentParser()
    cli.add_commands(parser.add_subparsers())
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW_TOKEN + "\n"))
    args = parser.parse_args(["firstboot", "join", "--endpoint", "https://10.0.0.6:9443",
                              "--ca-sha256", PIN, "--token-file", "-"])
    assert cli.cmd_firstboot_join(args, geteuid=lambda: 0) == 0
    assert "join settings replaced (https://10.0.0.6:9443)" in capsys.readouterr().out
    assert bootstrap.load(node.where, cmdline="").join.token == NEW_TOKEN
    with pytest.raises(SystemExit):
        parser.parse_args(["firstboot", "join", "--endpoint", "https://x:9443",
                           "--ca-sha256", PIN, "--token", NEW_TOKEN])


def test_the_command_says_why_in_one_line(node, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(node.where))
    monkeypatch.setattr("rackforge.systemd.systemctl", recorder(node))
    parser = __import__("argparse").ArgumentParser()
    cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(["firstboot", "join", "--endpoint", "https://10.0.0.6:9443",
                              "--ca-sha256", PIN, "--token-file", str(tmp_path / "none")])
    assert cli.cmd_firstboot_join(args, geteuid=lambda: 0) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read the token file" in err
    token = tmp_path / "token"
    token.write_text("bad\n")
    args.token_file = str(token)
    assert cli.cmd_firstboot_join(args, geteuid=lambda: 0) == 2
    assert "'join.token' is not a join token" in capsys.readouterr().err
    assert yaml.safe_load(node.where.read_text()) == OLD


def test_the_command_splits_commas_asks_on_a_terminal_and_needs_root(
        node, monkeypatch, capsys):
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(node.where))
    monkeypatch.setattr("rackforge.systemd.systemctl", recorder(node))
    parser = __import__("argparse").ArgumentParser()
    cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(["firstboot", "join", "--endpoint",
                              "https://10.0.0.6:9443,https://10.0.0.7:9443",
                              "--ca-sha256", PIN, "--token-file", "-"])
    assert cli.cmd_firstboot_join(args, geteuid=lambda: 1000) == 2
    assert "needs root" in capsys.readouterr().err and node.calls == []

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    asked = []
    assert cli.read_token("-", ask=lambda prompt: asked.append(prompt) or NEW_TOKEN,
                          stdin=Terminal("typed where all can see\n")) == NEW_TOKEN
    assert asked and "join token" in asked[0]
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW_TOKEN + "\n"))
    assert cli.cmd_firstboot_join(args, geteuid=lambda: 0) == 0
    assert yaml.safe_load(node.where.read_text())["join"]["endpoints"] == [
        "https://10.0.0.6:9443", "https://10.0.0.7:9443"]
