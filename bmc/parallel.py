"""Run one BMC action on many BMCs: bounded parallelism, per-node deadline, retries.

* At most ``concurrency`` BMCs are worked on at once.
* Each BMC gets ``timeout`` seconds from the moment its turn comes, retries
  included.  A call that hangs past it is reported as timed out and abandoned
  (its daemon thread may finish later; its result is ignored), so one dead BMC
  never holds up the table.
* Retryable errors (:attr:`RackforgeError.retryable`) are tried again after a
  pause that doubles each time (1, 2, 4, 8 s by default), at most ``attempts``
  times; every other error, above all a refused password, stops that BMC at
  once: no retry storm against a BMC that would lock the account.
* Results come back in the order of the targets; one failure never hides the
  others.  No password reaches a result or a log line: every message passes
  :func:`rackforge.bmc.errors.redact`.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

from rackforge.bmc import errors

LOG = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 7
DEFAULT_BACKOFF = 1.0
MAX_PAUSE = 8.0


@dataclass
class Result:
    """The outcome for one target."""

    target: str
    ok: bool = False
    value: object = None
    error: str = None
    retryable: bool = None
    attempts: int = 0
    seconds: float = 0.0
    retries: list = field(default_factory=list)   # the messages of retried failures

    def as_dict(self):
        return {"target": self.target, "ok": self.ok, "value": self.value,
                "error": self.error, "attempts": self.attempts,
                "seconds": round(self.seconds, 3)}


def call_with_retries(fn, label, action, timeout=DEFAULT_TIMEOUT, attempts=DEFAULT_ATTEMPTS,
                      backoff=DEFAULT_BACKOFF, clock=time.monotonic, sleep=time.sleep,
                      on_retry=None):
    """``fn()``, retried on retryable errors while attempts and time remain.

    :returns: (value, number of attempts)
    :raises: the last error, as a :class:`RackforgeError`
    """
    deadline = clock() + timeout
    pause = backoff
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except errors.RackforgeError as e:
            err = e
        except Exception as e:      # a library bug or an untranslated error: never retried
            LOG.debug("unexpected error from %s during %s", label, action, exc_info=True)
            err = errors.BMCCommandFailed(bmc=label, action=action,
                                          detail="%s: %s" % (type(e).__name__, e))
            err.retryable = False
        if not err.retryable or attempt >= attempts or clock() + pause > deadline:
            err.attempts = attempt
            raise err
        if on_retry:
            on_retry(err)
        LOG.debug("%s: %s; retry %d in %.1f s", label, err, attempt, pause)
        sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)


def run_all(targets, fn, action, label=str, concurrency=DEFAULT_CONCURRENCY,
            timeout=DEFAULT_TIMEOUT, attempts=DEFAULT_ATTEMPTS, backoff=DEFAULT_BACKOFF,
            secrets=(), grace=2.0):
    """``fn(target)`` for every target, in parallel; a :class:`Result` per target.

    :param label: target -> the name used in results and messages
    :param secrets: strings to redact from every message (the passwords in play)
    :param grace: seconds past ``timeout`` before a hung call is abandoned
    """
    targets = list(targets)
    results = [Result(target=label(t)) for t in targets]
    cond = threading.Condition()
    running = {}                # index -> deadline
    last_error = {}             # index -> the last retried failure, for a timeout's line
    secrets = [s for s in secrets if s]

    def retried(i, res, err):
        text = errors.redact(err, secrets)
        res.retries.append(text)
        with cond:
            last_error[i] = text

    def work(i, target):
        res = Result(target=results[i].target)
        start = time.monotonic()
        try:
            res.value, res.attempts = call_with_retries(
                lambda: fn(target), res.target, action, timeout=timeout, attempts=attempts,
                backoff=backoff,
                on_retry=lambda e: retried(i, res, e))
            res.ok = True
        except errors.RackforgeError as e:
            res.error = errors.redact(e, secrets)
            res.retryable = e.retryable
            res.attempts = getattr(e, "attempts", 1)
        res.seconds = time.monotonic() - start
        with cond:
            if i in running:        # not abandoned: publish
                del running[i]
                results[i] = res
                cond.notify_all()

    pending = list(enumerate(targets))
    pending.reverse()
    with cond:
        while pending or running:
            while pending and len(running) < concurrency:
                i, target = pending.pop()
                running[i] = time.monotonic() + timeout + grace
                threading.Thread(target=work, args=(i, target), daemon=True,
                                 name="bmc-%s" % results[i].target).start()
            now = time.monotonic()
            for i, deadline in list(running.items()):
                if now >= deadline:
                    del running[i]
                    res = results[i]
                    res.ok, res.seconds, res.retryable = False, now - deadline + timeout, True
                    res.error = str(errors.BMCTimeout(bmc=res.target, action=action,
                                                      seconds=timeout))
                    if i in last_error:
                        res.error += "; last error: " + last_error[i]
            if running:
                cond.wait(max(0.01, min(running.values()) - now))
    for res in results:
        if not res.ok:
            LOG.debug("%s: %s failed: %s", res.target, action, res.error)
    return results
