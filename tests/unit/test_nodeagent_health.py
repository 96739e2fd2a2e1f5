"""Health trackers: states, a blip is not a failure, restarts with backoff and a limit,
reported once."""

import logging

from rackforge.nodeagent import catalogue, health

SVC = catalogue.Service(name="memcached", description="", roles=("controller",),
                        units=("memcached.service",), restart_limit=3, restart_window=3600,
                        health=catalogue.Health(type="tcp", port=11211))


def test_a_blip_is_not_a_failure_three_in_a_row_are():
    t = health.Tracker(service=SVC)
    assert t.observe(health.Result(health.OK), 1.0) and t.state == health.OK
    assert not t.observe(health.Result(health.FAILED, "refused"), 2.0)
    assert not t.observe(health.Result(health.FAILED, "refused"), 3.0)
    assert t.observe(health.Result(health.FAILED, "refused"), 4.0)
    assert (t.state, t.since, t.error) == (health.FAILED, 4.0, "refused")
    assert t.observe(health.Result(health.OK), 5.0) and t.failures == 0


def test_degraded_or_starting_is_no_failure_and_counts_none_towards_one():
    """A Galera node that was degraded (a change to apply) and then starts again in its
    turn is not failed at the first failed check after that: three in a row still."""
    t = health.Tracker(service=SVC, state=health.OK)
    for at in (1.0, 2.0, 3.0):
        t.observe(health.Result(health.DEGRADED, "its configuration changed"), at)
    assert t.state == health.DEGRADED and t.failures == 0
    assert t.observe(health.Result(health.PENDING, "starting"), 4.0)
    assert t.state == health.PENDING
    assert not t.observe(health.Result(health.FAILED, "refused"), 5.0)
    assert t.state == health.PENDING


def test_restarts_back_off_and_stop_at_the_limit_and_say_so_once(caplog):
    t = health.Tracker(service=SVC, state=health.FAILED)
    now, allowed = 0.0, []
    for _ in range(200):
        if t.may_restart(now):
            allowed.append(now)
        now += 5
    assert allowed == [0.0, 10.0, 30.0]            # 10 s, then 20 s: a growing delay
    with caplog.at_level(logging.ERROR):
        for _ in range(5):
            assert not t.may_restart(now)
    assert len([r for r in caplog.records if "left failed" in r.message]) == 1
    assert t.may_restart(now + 3600)                # the window moved on


def test_detail_changes_are_published_too():
    t = health.Tracker(service=SVC, state=health.OK)
    assert t.observe(health.Result(health.OK, "", {"vip": True}), 1.0)
    assert not t.observe(health.Result(health.OK, "", {"vip": True}), 2.0)
    assert t.record()["detail"] == {"vip": True}


def test_checks_over_loopback(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        ok = health.check_tcp("127.0.0.1", catalogue.Health(type="tcp", port=port, timeout=1))
    refused = health.check_tcp("127.0.0.1", catalogue.Health(type="tcp", port=port, timeout=1))
    assert ok.state == health.OK and refused.state == health.FAILED
    cmd = health.check_command(["sh", "-c", "echo donor; exit 2"],
                               catalogue.Health(type="command", argv=("x",)))
    assert (cmd.state, cmd.error) == (health.DEGRADED, "donor")
