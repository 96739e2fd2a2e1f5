"""``rack up`` against fake BMCs and the in-memory registry, with machines that install
through the real install API and join through the real join service (tests/lib/bringupsim)."""

import concurrent.futures
import io
import logging
import re

import pytest
from bringupsim import PASSWORD, World
from fakeclock import Clock

from rackforge import errors, states
from rackforge.bmc import credentials
from rackforge.bmc import errors as bmc_errors
from rackforge.bringup import display, progress, rack

ADDRESSES = ("10.0.0.11", "10.0.0.12", "10.0.0.13")


@pytest.fixture
def world(tmp_path, monkeypatch):
    return World(tmp_path, monkeypatch)


def settings(**kw):
    base = dict(driver="fake", username="admin", password=lambda: PASSWORD, timeout=10,
                attempts=2, deadline=600, poll=5, concurrency=8)
    base.update(kw)
    return rack.Settings(**base)


class InlineExecutor:
    """The follow loop's pool, running each job as it is submitted: on the fake clock a
    thread's job would finish at no particular poll (its result read one poll later,
    as with threads, since the loop looks at a job on the poll after it started it)."""

    def __init__(self, workers):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def submit(fn, *args, **kw):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kw))
        except Exception as exc:        # noqa: BLE001 - handed back as a thread's would be
            future.set_exception(exc)
        return future


def rack_up(world, addresses, stop_after=None, tty=False, **kw):
    """One run; ``stop_after`` ticks of the machines, it stops as Ctrl-C would."""
    out, clock = io.StringIO(), Clock(0.0)

    def sleep(seconds):
        clock.now += seconds
        world.tick()
        if stop_after is not None and world.ticks >= stop_after:
            raise KeyboardInterrupt

    wall = (lambda: 1_700_000_000 + clock.now)
    world.install.clock = wall          # the install report's time, on the same clock
    shown = display.Display(out, tty=tty, wall=wall)
    run = rack.RackUp(world.registry, settings(**kw), shown, world.key,
                      driver_for=lambda name: world.fake, clock=clock, wall=wall, sleep=sleep,
                      executor=InlineExecutor)
    trackers = run.run([(a, None) for a in addresses])
    ok = shown.summary(trackers)
    return {t.label.split(":")[0]: t for t in trackers}, ok, out.getvalue(), clock


def phases(out, name):
    """The phases one node's plain lines went through, in order."""
    seen = []
    for line in out.splitlines():
        if "  %s (" % name in line:
            word = line.split(") ", 1)[1].split(":")[0].split(" ")[0]
            if not seen or seen[-1] != word:
                seen.append(word)
    return seen


def test_each_node_goes_enrolled_booting_installing_installed_joining_active(world):
    for a in ADDRESSES:
        world.machine(a)
    trackers, ok, out, _ = rack_up(world, ADDRESSES)
    assert ok, out
    for a in ADDRESSES:
        node = world.node(a)
        assert node.state == "active" and trackers[a].outcome == "active"
        assert phases(out, node.name) == ["enrolled", "booting", "installing", "installed",
                                          "joining", "boot", "active"]
        # the BMC told to boot the disk is said once, and active once, last
        lines = [x for x in out.splitlines() if "  %s (" % node.name in x]
        assert sum(x.endswith(") boot device disk (persistent)") for x in lines) == 1
        assert sum(x.endswith(") active") for x in lines) == 1 and lines[-1].endswith("active")
        assert len(world.calls(a, "power on")) == 1
        assert world.calls(a, "power reset") == []      # its own reboot came
        # the machine booted the installer, then its disk; never the installer again
        kinds = world.machines[a].boots
        assert kinds[0] == "install" and set(kinds[kinds.index("local"):]) == {"local"}
    assert "rack up: 3 of 3 nodes up (3 active)" in out
    assert PASSWORD not in out


def test_boot_device_is_pxe_for_the_install_then_disk_persistent_once_installed(
        world, monkeypatch):
    world.machine("10.0.0.11")
    seen = []
    real = world.fake.management.set_boot_device

    def spy(bmc, device, persistent=False, uefi=False):
        seen.append((device, persistent, world.node(bmc.address).state))
        return real(bmc, device, persistent=persistent, uefi=uefi)
    monkeypatch.setattr(world.fake.management, "set_boot_device", spy)
    _, ok, out, _ = rack_up(world, ["10.0.0.11"])
    assert ok, out
    assert seen[0] == ("pxe", False, "installing")
    assert seen[-1][:2] == ("disk", True) and seen[-1][2] in ("installed", "joining", "active")
    assert [s[0] for s in seen] == ["pxe", "disk"]
    assert world.fake.rack.boot["10.0.0.11"] == {"device": "disk", "persistent": True,
                                                 "uefi": False}
    assert progress.ProgressStore(world.kv).get(world.node("10.0.0.11").id).is_done("disk")


def test_a_stopped_run_continues_without_a_second_power_on(world):
    for a in ADDRESSES:
        world.machine(a)
    with pytest.raises(KeyboardInterrupt):
        rack_up(world, ADDRESSES, stop_after=2)        # stopped while the nodes install
    assert {world.node(a).state for a in ADDRESSES} <= {"installing", "installed"}
    trackers, ok, out, _ = rack_up(world, [])           # no BMC named: it continues
    assert ok, out
    for a in ADDRESSES:
        assert world.node(a).state == "active"
        assert len(world.calls(a, "power on")) == 1     # not powered on again
        assert len(world.calls(a, "inventory")) == 1    # not enrolled again
        assert world.machines[a].boots.count("install") >= 1


class Stopped(errors.RackforgeError):
    message = "stopped here"


def test_a_run_stopped_between_the_power_on_and_its_record_does_not_power_on_twice(
        world, monkeypatch):
    world.machine("10.0.0.11")
    real = progress.ProgressStore.done

    def done(self, node_id, step, **result):
        if step == "power":
            raise Stopped()                  # the power-on happened; its record did not
        return real(self, node_id, step, **result)
    monkeypatch.setattr(progress.ProgressStore, "done", done)
    trackers, ok, out, _ = rack_up(world, ["10.0.0.11"], attempts=1)
    assert not ok and "stopped here" in trackers["10.0.0.11"].error
    record = progress.ProgressStore(world.kv).get(world.node("10.0.0.11").id)
    assert record.step("power")["status"] == progress.STARTED
    assert record.step("power")["was"] == "off"
    monkeypatch.setattr(progress.ProgressStore, "done", real)
    _, ok, out, _ = rack_up(world, ["10.0.0.11"])
    assert ok, out
    assert len(world.calls("10.0.0.11", "power on")) == 1


def test_a_failed_node_is_reported_and_does_not_hold_up_the_others(world):
    world.machine("10.0.0.11")
    world.machine("10.0.0.12", fail="no disk matches size=largest")
    world.machine("10.0.0.13")
    trackers, ok, out, clock = rack_up(world, ADDRESSES)
    assert not ok
    failed = trackers["10.0.0.12"]
    assert failed.outcome == "failed"
    assert failed.error == "install failed: no disk matches size=largest"
    assert world.node("10.0.0.12").state == "failed"
    assert trackers["10.0.0.11"].outcome == trackers["10.0.0.13"].outcome == "active"
    assert clock.now < 100                               # nobody waited for a deadline
    assert "rack up: 2 of 3 nodes up (2 active, 1 failed)" in out
    assert "node-fake0012 (10.0.0.12:623): failed: install failed: no disk matches" in out


def test_a_silent_node_times_out_alone(world):
    world.machine("10.0.0.11")
    world.machine("10.0.0.12", silent=True)              # never boots
    trackers, ok, out, clock = rack_up(world, ["10.0.0.11", "10.0.0.12"], deadline=120)
    assert trackers["10.0.0.11"].outcome == "active"
    assert trackers["10.0.0.12"].outcome == "timed out"
    assert "phase booting" in trackers["10.0.0.12"].error and not ok
    assert 120 <= clock.now < 140


def test_a_node_whose_reboot_hangs_after_its_install_is_reset_once_through_its_bmc(
        world, monkeypatch):
    world.machine("10.0.0.11")
    world.machine("10.0.0.12", hang_reboot=True)
    order = []
    for name in ("set_boot_device", "set_power_state"):
        real = getattr(world.fake.management if name == "set_boot_device" else
                       world.fake.power, name)

        def spy(bmc, what, *a, _real=real, **kw):
            order.append((bmc.address, what))
            return _real(bmc, what, *a, **kw)
        monkeypatch.setattr(world.fake.management if name == "set_boot_device" else
                            world.fake.power, name, spy)
    trackers, ok, out, _ = rack_up(world, ["10.0.0.11", "10.0.0.12"], reboot_wait=300)
    assert ok, out
    assert world.calls("10.0.0.11", "power reset") == []
    assert len(world.calls("10.0.0.12", "power reset")) == 1
    mine = [o for o in order if o[0] == "10.0.0.12"]
    assert mine.index(("10.0.0.12", "disk")) < mine.index(("10.0.0.12", "reset"))
    assert world.node("10.0.0.12").state == "active"
    assert re.search(r"node-fake0012 \(10.0.0.12:623\) no first boot 3\d\d s after its "
                     r"install: reset through its BMC \(once\)", out), out
    record = progress.ProgressStore(world.kv).get(world.node("10.0.0.12").id)
    assert record.is_done("restart")


def test_a_reset_begun_by_a_stopped_run_is_not_sent_again_and_is_said(world):
    world.machine("10.0.0.12", hang_reboot=True)
    with pytest.raises(KeyboardInterrupt):
        rack_up(world, ["10.0.0.12"], stop_after=4)         # stopped once it is installed
    node = world.node("10.0.0.12")
    assert node.state == "installed"
    store = progress.ProgressStore(world.kv)
    assert store.claim(node.id, "restart")                  # a run that died in the reset
    assert not store.claim(node.id, "restart")              # ... claimed once only
    trackers, ok, out, _ = rack_up(world, [], reboot_wait=60, deadline=300)
    assert world.calls("10.0.0.12", "power reset") == []
    assert trackers["10.0.0.12"].outcome == "timed out" and not ok
    notes = [x for x in out.splitlines() if "begun by an earlier run" in x]
    assert len(notes) == 1 and "'rackforge power reset node-fake0012'" in notes[0], out


def test_a_reset_the_bmc_refused_is_sent_again(world, monkeypatch):
    world.machine("10.0.0.12", hang_reboot=True)
    real, refused = world.fake.power.set_power_state, []

    def once(bmc, action):
        if action == "reset" and not refused:
            refused.append(action)
            raise bmc_errors.BMCCommandFailed(bmc=bmc.label, action="power reset",
                                              detail="busy")
        return real(bmc, action)
    monkeypatch.setattr(world.fake.power, "set_power_state", once)
    _, ok, out, _ = rack_up(world, ["10.0.0.12"], reboot_wait=120)
    assert ok, out
    assert refused == ["reset"] and len(world.calls("10.0.0.12", "power reset")) == 1
    record = progress.ProgressStore(world.kv).get(world.node("10.0.0.12").id)
    assert record.is_done("restart")


def test_a_failed_node_is_installed_again_only_when_asked(world):
    world.machine("10.0.0.12", fail="disk full")
    rack_up(world, ["10.0.0.12"])
    before = len(world.calls("10.0.0.12", "power on"))
    trackers, ok, out, _ = rack_up(world, ["10.0.0.12"])
    assert not ok and trackers["10.0.0.12"].outcome == "failed"
    assert "--retry-failed" in trackers["10.0.0.12"].error
    assert len(world.calls("10.0.0.12", "power on")) == before
    world.machines["10.0.0.12"].fail = None
    world.machines["10.0.0.12"].answer = None
    world.machines["10.0.0.12"].reported = False
    world.fake.rack.power["10.0.0.12"] = "off"
    trackers, ok, out, _ = rack_up(world, ["10.0.0.12"], retry_failed=True)
    assert ok, out
    node = world.node("10.0.0.12")
    assert node.state == "active" and "error" not in node.boot


def test_an_active_node_is_left_alone(world):
    world.machine("10.0.0.11")
    rack_up(world, ["10.0.0.11"])
    calls = list(world.fake.rack.calls)
    trackers, ok, out, _ = rack_up(world, ["10.0.0.11"])
    assert ok and trackers["10.0.0.11"].outcome == "active"
    assert world.fake.rack.calls == calls                 # not a single BMC call


def test_set_bmc_password_gives_each_bmc_its_own_sealed_never_shown(world, caplog):
    caplog.set_level(logging.DEBUG)
    for a in ("10.0.0.11", "10.0.0.12"):
        world.machine(a)
    _, ok, out, _ = rack_up(world, ["10.0.0.11", "10.0.0.12"], set_bmc_password=True)
    assert ok, out
    news = []
    for a in ("10.0.0.11", "10.0.0.12"):
        node = world.node(a)
        new = credentials.decrypt(node.bmc["password"], world.key)
        assert new == world.fake.rack.passwords[a] and new != PASSWORD and len(new) == 16
        news.append(new)
        record = progress.ProgressStore(world.kv).get(node.id)
        assert record.is_done("password") and "pending" not in record.step("password")
    assert news[0] != news[1]
    dump = b"".join(e.value for e in world.kv.get_prefix("/"))
    for secret in news + [PASSWORD]:
        assert secret not in out and secret not in caplog.text
        assert secret.encode() not in dump


def test_a_password_set_before_the_run_stopped_is_not_set_again(world, monkeypatch):
    world.machine("10.0.0.11")
    real = rack.steps.NodeSteps._commit

    def commit(self, t, new):
        raise Stopped()                      # the BMC has the new one; the registry not
    monkeypatch.setattr(rack.steps.NodeSteps, "_commit", commit)
    _, ok, _, _ = rack_up(world, ["10.0.0.11"], set_bmc_password=True, attempts=1)
    assert not ok
    new = world.fake.rack.passwords["10.0.0.11"]
    monkeypatch.setattr(rack.steps.NodeSteps, "_commit", real)
    _, ok, out, _ = rack_up(world, ["10.0.0.11"], set_bmc_password=True)
    assert ok, out
    assert len(world.calls("10.0.0.11", "set user password")) == 1
    node = world.node("10.0.0.11")
    assert credentials.decrypt(node.bmc["password"], world.key) == new


def test_a_node_without_a_bmc_answer_fails_alone(world):
    from rackforge.bmc import errors as bmc_errors
    world.machine("10.0.0.11")
    world.fake.rack.passwords["10.0.0.12"] = "another"      # refuses our password
    trackers, ok, out, _ = rack_up(world, ["10.0.0.11", "10.0.0.12"])
    assert trackers["10.0.0.11"].outcome == "active"
    assert trackers["10.0.0.12"].outcome == "failed"
    assert "refused user 'admin'" in trackers["10.0.0.12"].error
    assert len(world.calls("10.0.0.12", "inventory")) == 1   # a refusal is not retried
    assert issubclass(bmc_errors.BMCAuthFailed, errors.RackforgeError)


def test_the_terminal_gets_the_table_redrawn(world):
    world.machine("10.0.0.11")
    _, ok, out, _ = rack_up(world, ["10.0.0.11"], tty=True)
    assert ok
    assert "\x1b[1F" in out and "\x1b[2K" in out and "NODE" in out


def test_the_install_step_records_intent_and_the_move_is_the_operators(world):
    world.machine("10.0.0.11", silent=True)
    rack_up(world, ["10.0.0.11"], follow=False)
    node = world.node("10.0.0.11")
    assert node.state == "installing"
    record = progress.ProgressStore(world.kv).get(node.id)
    assert record.is_done("install") and record.step("install")["rev"] == record.installing_rev
    assert record.disk is None or record.disk == {"match": {"size": "largest"},
                                                  "wipe": "never"}
    assert states.TRANSITIONS[("enrolled", "installing")] == states.OPERATOR
