"""Bounded parallelism, per-node deadlines and retries that stop on auth errors."""

import threading
import time

import pytest

from rackforge.bmc import errors, parallel


def unreachable(label="b"):
    return errors.BMCUnreachable(bmc=label, detail="no answer", protocol="IPMI")


def test_retryable_errors_are_retried_with_backoff():
    calls, pauses = [], []

    def fn():
        calls.append(1)
        if len(calls) < 3:
            raise unreachable()
        return "on"
    value, attempts = parallel.call_with_retries(fn, "b", "power status", sleep=pauses.append)
    assert (value, attempts) == ("on", 3)
    assert pauses == [1.0, 2.0]


def test_auth_errors_stop_at_once():
    calls = []

    def fn():
        calls.append(1)
        raise errors.BMCAuthFailed(bmc="b", user="admin", detail="incorrect password")
    with pytest.raises(errors.BMCAuthFailed):
        parallel.call_with_retries(fn, "b", "power status", sleep=lambda s: None)
    assert len(calls) == 1


def test_attempts_are_bounded():
    calls = []

    def fn():
        calls.append(1)
        raise unreachable()
    with pytest.raises(errors.BMCUnreachable) as e:
        parallel.call_with_retries(fn, "b", "x", attempts=4, sleep=lambda s: None)
    assert len(calls) == 4 and e.value.attempts == 4


def test_unexpected_exceptions_become_one_line_and_are_not_retried():
    calls = []

    def fn():
        calls.append(1)
        raise KeyError("weird")
    with pytest.raises(errors.BMCCommandFailed) as e:
        parallel.call_with_retries(fn, "b", "x", sleep=lambda s: None)
    assert len(calls) == 1 and "KeyError" in str(e.value)


def test_one_failure_never_hides_the_others_and_order_is_kept():
    def fn(t):
        if t == "bad":
            raise errors.BMCAuthFailed(bmc=t, user="u", detail="incorrect password")
        return t.upper()
    res = parallel.run_all(["a", "bad", "c"], fn, "x", backoff=0)
    assert [r.target for r in res] == ["a", "bad", "c"]
    assert [r.ok for r in res] == [True, False, True]
    assert res[2].value == "C" and "refused" in res[1].error


def test_concurrency_is_bounded():
    """Exactly 4 at once: a barrier of 4 only opens if 4 run together."""
    lock = threading.Lock()
    now = {"cur": 0, "max": 0}
    together = threading.Barrier(4, timeout=10)

    def fn(t):
        with lock:
            now["cur"] += 1
            now["max"] = max(now["max"], now["cur"])
        together.wait()
        with lock:
            now["cur"] -= 1
        return t
    res = parallel.run_all(range(20), fn, "x", concurrency=4)
    assert all(r.ok for r in res) and now["max"] == 4


def test_a_hung_bmc_times_out_while_the_others_succeed():
    release = threading.Event()

    def fn(t):
        if t == "hung":
            release.wait(10)
        return "ok"
    start = time.monotonic()
    try:
        res = parallel.run_all(["a", "hung", "b"], fn, "power status", timeout=0.3, grace=0.1)
    finally:
        release.set()
    assert time.monotonic() - start < 3
    assert [r.ok for r in res] == [True, False, True]
    assert "did not finish 'power status'" in res[1].error


def test_passwords_are_redacted_from_results():
    def fn(t):
        raise errors.BMCCommandFailed(bmc=t, action="x", detail="echoed s3cret back")
    res = parallel.run_all(["a"], fn, "x", attempts=1, secrets=["s3cret"])
    assert "s3cret" not in res[0].error and "***" in res[0].error
