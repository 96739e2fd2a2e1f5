"""The step journal: results persisted, kills resumed, once-steps never run twice."""

import json

import pytest

from rackforge.errors import RackforgeError
from rackforge.firstboot import journal


class Killed(BaseException):
    """A power cut: not an error the journal may catch."""


def make_steps(log, world, kill_at=None):
    def plain(name):
        def run(ctx, intent):
            log.append(name)
            if kill_at == name:
                raise Killed()
            return {"name": name}
        return journal.Step(name, run)

    def join_run(ctx, intent):
        log.append("join")
        # the side effect, keyed on the intent: idempotent for the same intent
        world.setdefault(intent["hint"], len(world) + 1)
        world["spent"] = world.get("spent", 0) + (0 if intent["hint"] in world.get(
            "hints", []) else 1)
        world.setdefault("hints", []).append(intent["hint"])
        if kill_at == "join-after-effect":
            raise Killed()
        return {"node_id": world[intent["hint"]]}

    def join_recover(ctx, intent):
        log.append("recover")
        if intent["hint"] in world:
            return {"node_id": world[intent["hint"]]}
        return None

    counter = {"n": 0}

    def prepare(ctx):
        counter["n"] += 1
        return {"hint": "node-%d" % counter["n"]}

    return [plain("inventory"), plain("network"),
            journal.Step("join", join_run, once=True, prepare=prepare, recover=join_recover),
            plain("role"), plain("handover")]


def records(tmp_path):
    d = journal.steps_dir(tmp_path)
    return {p.name: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}


def test_runs_all_and_marks_done(tmp_path):
    log, world = [], {}
    ctx = journal.run(make_steps(log, world), base=tmp_path)
    assert log == ["inventory", "network", "join", "role", "handover"]
    assert ctx.results["join"] == {"node_id": 1}
    recs = records(tmp_path)
    assert sorted(recs) == ["01-inventory.json", "02-network.json", "03-join.json",
                            "04-role.json", "05-handover.json"]
    assert all(r["status"] == "done" for r in recs.values())
    assert recs["03-join.json"]["intent"] == {"hint": "node-1"}
    assert journal.done_marker(tmp_path).is_file()
    # a second run does nothing at all
    log.clear()
    ctx = journal.run(make_steps(log, world), base=tmp_path)
    assert log == [] and ctx.results["role"] == {"name": "role"}


def test_kill_in_the_middle_resumes_at_that_step(tmp_path):
    log, world = [], {}
    with pytest.raises(Killed):
        journal.run(make_steps(log, world, kill_at="role"), base=tmp_path)
    assert log == ["inventory", "network", "join", "role"]
    assert not journal.done_marker(tmp_path).exists()
    assert journal.state(make_steps([], {}), base=tmp_path) == [
        ("inventory", "done"), ("network", "done"), ("join", "done"), ("role", "started"),
        ("handover", None)]
    log.clear()
    ctx = journal.run(make_steps(log, world), base=tmp_path)
    assert log == ["role", "handover"]          # done steps skipped, their results kept
    assert ctx.results["join"] == {"node_id": 1} and world["spent"] == 1
    assert records(tmp_path)["04-role.json"]["attempts"] == 2


def test_once_step_killed_after_its_side_effect_is_not_run_again(tmp_path):
    log, world = [], {}
    with pytest.raises(Killed):
        journal.run(make_steps(log, world, kill_at="join-after-effect"), base=tmp_path)
    assert world["spent"] == 1
    rec = records(tmp_path)["03-join.json"]
    assert rec["status"] == "started" and rec["intent"] == {"hint": "node-1"}
    log.clear()
    ctx = journal.run(make_steps(log, world), base=tmp_path)
    assert log == ["recover", "role", "handover"]    # join did not run twice
    assert ctx.results["join"] == {"node_id": 1} and world["spent"] == 1
    assert [k for k in world if k.startswith("node-")] == ["node-1"]


def test_once_step_killed_before_its_side_effect_reruns_with_the_same_intent(tmp_path):
    log, world = [], {}
    steps = make_steps(log, world)

    def die_first(ctx, intent):
        raise Killed()
    steps[2].run = die_first
    with pytest.raises(Killed):
        journal.run(steps, base=tmp_path)
    assert world == {}
    log.clear()
    steps = make_steps(log, world)
    steps[2].prepare = lambda ctx: pytest.fail("a resumed step must reuse its recorded intent")
    ctx = journal.run(steps, base=tmp_path)
    assert log == ["recover", "join", "role", "handover"]
    assert ctx.results["join"] == {"node_id": 1} and "node-1" in world


def test_a_failing_step_is_one_line_and_resumes(tmp_path):
    class Bad(RackforgeError):
        message = "seed not reachable at {url}"

    log, world = [], {}
    steps = make_steps(log, world)

    def fails(ctx, intent):
        raise Bad(url="https://10.0.0.5:9443")
    steps[1].run = fails
    with pytest.raises(journal.StepFailed) as e:
        journal.run(steps, base=tmp_path)
    assert str(e.value).startswith("first boot step 'network' failed: seed not reachable")
    assert records(tmp_path)["02-network.json"]["error"].startswith("seed not reachable")
    log.clear()
    journal.run(make_steps(log, world), base=tmp_path)
    assert log == ["network", "join", "role", "handover"]
    assert "error" not in records(tmp_path)["02-network.json"]


def test_corrupt_record_and_reset(tmp_path):
    log, world = [], {}
    journal.run(make_steps(log, world), base=tmp_path)
    assert journal.reset(base=tmp_path) == 6
    assert records(tmp_path) == {} and not journal.done_marker(tmp_path).exists()
    assert journal.reset(base=tmp_path) == 0
    d = journal.steps_dir(tmp_path)
    (d / "01-inventory.json").write_text("{half")
    with pytest.raises(journal.JournalCorrupt, match="firstboot reset --yes"):
        journal.run(make_steps(log, world), base=tmp_path)


def test_default_location_follows_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path))
    assert journal.steps_dir() == tmp_path / "firstboot" / "steps"
    assert journal.done_marker() == tmp_path / "firstboot.done"


def test_cli_reset_asks_for_yes(tmp_path, monkeypatch, capsys):
    from rackforge import cli

    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path))
    journal.run(make_steps([], {}), base=tmp_path)
    assert cli.main(["firstboot", "reset"]) == 2
    assert "--yes" in capsys.readouterr().err and journal.done_marker(tmp_path).exists()
    assert cli.main(["firstboot", "reset", "--yes"]) == 0
    assert "removed 6 first-boot records" in capsys.readouterr().out
    assert not journal.done_marker(tmp_path).exists() and records(tmp_path) == {}


def test_break_after_a_step_waits_after_its_side_effect_before_done(tmp_path, monkeypatch):
    """RACKFORGE_FIRSTBOOT_BREAK: the drill the nspawn test cuts the power in."""
    log, world, said = [], {}, []
    monkeypatch.setenv(journal.BREAK_ENV, "join")

    def cut():
        raise Killed()
    with pytest.raises(Killed):
        journal.run(make_steps(log, world), base=tmp_path, say=said.append, wait=cut)
    assert world["spent"] == 1 and said[-1].startswith("break after step join's side effect")
    assert records(tmp_path)["03-join.json"]["status"] == "started"
    monkeypatch.delenv(journal.BREAK_ENV)
    log.clear()
    journal.run(make_steps(log, world), base=tmp_path, say=said.append)
    assert log == ["recover", "role", "handover"] and world["spent"] == 1


def test_every_boot_step_runs_again_on_resume_even_when_done(tmp_path):
    log, world = [], {}
    with pytest.raises(Killed):
        journal.run(make_steps(log, world, kill_at="role"), base=tmp_path)
    log.clear()
    steps = make_steps(log, world)
    steps[1].every_boot = True          # "network": a reboot lost the address
    said = []
    journal.run(steps, base=tmp_path, say=said.append)
    assert log == ["network", "role", "handover"]
    assert "step network: again after a reboot" in said
