"""The first-boot step journal: every step's result persisted, resumable after a power cut.

Each step writes ``state_dir()/firstboot/steps/<NN-name>.json`` atomically
(:func:`rackforge.fileutil.atomic_write`)::

    {"step": "join", "status": "started" | "done", "intent": {...},
     "result": {...}, "attempts": n, "started": t, "finished": t, "error": "..."}

:func:`run` walks the steps in order: a step whose record says ``done`` is
skipped (its stored result is handed to the later steps), the first one not
done is (re)started, and when all are done ``state_dir()/firstboot.done`` is
written (the systemd unit's ``ConditionPathExists=!`` then keeps first boot
from running again).

A step marked ``once`` has a side effect that must not happen twice (a token
use, a registry record, an etcd member).  Before it runs, its *intent* (what
:attr:`Step.prepare` returns, e.g. the node's name and key) is recorded; after,
its result.  If the process dies in between, the next run does not start
afresh: it hands the *same* intent to :attr:`Step.recover`, which returns the
result when the side effect already happened (and the step is then marked
done without running), or ``None``; only then does the step run again, with
the same intent, so it must be idempotent for that intent (the join server
recognises the same node and token hint and answers what it answered before).

``rackforge firstboot reset --yes`` (:func:`reset`) removes the records and
the marker.
"""

import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from rackforge import errors, paths
from rackforge.fileutil import atomic_write, make_dirs

LOG = logging.getLogger(__name__)
DONE, STARTED = "done", "started"


class StepFailed(errors.RackforgeError):
    message = ("first boot step '{step}' failed: {detail}; fix that and restart "
               "rackforge-firstboot (it resumes at this step)")


class JournalCorrupt(errors.ConfigError):
    message = ("first boot record {path} cannot be read ({detail}); run 'rackforge firstboot "
               "reset --yes' to start first boot over")


@dataclass
class Step:
    """One step: ``run(ctx, intent) -> JSON-able result``."""
    name: str
    run: Callable
    once: bool = False
    prepare: Optional[Callable] = None     # ctx -> intent (JSON-able), recorded before run
    recover: Optional[Callable] = None     # (ctx, intent) -> result | None, on resume
    # run again on every boot until first boot is complete, even when done: for
    # state that does not survive a reboot (the management address)
    every_boot: bool = False


class Context:
    """What the steps share: earlier results by step name, and injected helpers."""

    def __init__(self, **attrs):
        self.results = {}
        for key, value in attrs.items():
            setattr(self, key, value)


def steps_dir(base=None):
    return Path(base or paths.state_dir()) / "firstboot" / "steps"


def done_marker(base=None):
    return Path(base or paths.state_dir()) / "firstboot.done"


def _file(directory, index, step):
    return directory / ("%02d-%s.json" % (index + 1, step.name))


def _read(path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise JournalCorrupt(path=path, detail=exc) from None


def _write(path, record):
    make_dirs(path.parent, 0o700)
    atomic_write(path, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)


def state(steps, base=None):
    """``[(step name, status or None)]`` for the given steps."""
    directory = steps_dir(base)
    out = []
    for i, step in enumerate(steps):
        rec = _read(_file(directory, i, step))
        out.append((step.name, rec.get("status") if rec else None))
    return out


def records(base=None):
    """``{step name: record}`` of every step recorded so far (whatever the steps)."""
    directory = steps_dir(base)
    if not directory.is_dir():
        return {}
    out = {}
    for path in sorted(directory.glob("*.json")):
        rec = _read(path)
        if not isinstance(rec, dict):
            raise JournalCorrupt(path=path, detail="not a JSON object")
        out[path.stem.split("-", 1)[-1]] = rec
    return out


BREAK_ENV = "RACKFORGE_FIRSTBOOT_BREAK"


def _break_after(step, say, wait):
    """A power-loss drill, like dracut's ``rd.break``: ``RACKFORGE_FIRSTBOOT_BREAK=STEP``
    (a drop-in on rackforge-firstboot.service) stops the agent after STEP's side
    effect and before its record says done, until the machine is cut off."""
    if os.environ.get(BREAK_ENV) == step.name:
        say("break after step %s's side effect (%s): waiting for the power to be cut"
            % (step.name, BREAK_ENV))
        wait()


@dataclass(frozen=True)
class Retry:
    """How long a step that fails with a *retryable* error is tried again: from
    ``first`` seconds, doubling up to ``longest``, until ``deadline`` seconds
    after its first failure (a joiner that boots before the seed answers keeps
    trying; its token's expiry then ends it with a fatal error)."""
    first: float = 2.0
    longest: float = 60.0
    deadline: float = 2 * 3600.0


def _attempt(step, ctx, intent, rec, path, retry, clock, sleep, on_retry):
    """``step.run`` until it returns, fails for good, or its retry deadline passes."""
    delay, started = retry.first, clock()
    while True:
        try:
            return step.run(ctx, intent)
        except errors.RackforgeError as exc:
            rec["error"] = str(exc)
            if path is not None:
                _write(path, rec)
            if not exc.retryable or clock() + delay > started + retry.deadline:
                raise StepFailed(step=step.name, detail=exc) from exc
            if on_retry is not None:
                on_retry(step.name, exc, delay)
            sleep(delay)
            delay = min(delay * 2, retry.longest)


def run(steps, ctx=None, base=None, clock=time.time, say=None, wait=None, retry=Retry(),
        sleep=time.sleep, on_retry=None):
    """Run ``steps`` in order, skipping those done; returns ``ctx`` with every result.

    A step that raises a retryable error is tried again (:class:`Retry`), with
    ``on_retry(step name, error, delay)`` called before each wait.

    :raises StepFailed: a step failed for good; its record stays ``started`` so
        the next run resumes (or recovers) it.  Other exceptions (a kill)
        propagate as is.
    """
    ctx = ctx if ctx is not None else Context()
    say = say or (lambda line: LOG.info("%s", line))
    directory = steps_dir(base)
    marker = done_marker(base)
    for i, step in enumerate(steps):
        path = _file(directory, i, step)
        rec = _read(path)
        if rec and rec.get("status") == DONE and not step.every_boot:
            ctx.results[step.name] = rec.get("result")
            continue
        if rec and rec.get("status") == DONE:
            say("step %s: again after a reboot" % step.name)
            ctx.results[step.name] = _attempt(step, ctx, rec.get("intent"), dict(rec),
                                              None, retry, clock, sleep, on_retry)
            continue
        if rec and rec.get("status") == STARTED:
            intent = rec.get("intent")
            rec["attempts"] = rec.get("attempts", 1) + 1
            if step.once and step.recover is not None:
                result = step.recover(ctx, intent)
                if result is not None:
                    say("step %s: recovered after an interruption (not run again)" % step.name)
                    _finish(path, rec, result, ctx, step, clock)
                    continue
            say("step %s: resuming (attempt %d)" % (step.name, rec["attempts"]))
        else:
            intent = step.prepare(ctx) if step.prepare else None
            rec = {"step": step.name, "status": STARTED, "intent": intent, "attempts": 1,
                   "once": step.once, "started": clock()}
            say("step %s: starting" % step.name)
        rec.pop("error", None)
        _write(path, rec)       # the intent is on disk before any side effect
        result = _attempt(step, ctx, intent, rec, path, retry, clock, sleep, on_retry)
        _break_after(step, say, wait or _forever)
        _finish(path, rec, result, ctx, step, clock)
    make_dirs(marker.parent, 0o755)
    atomic_write(marker, json.dumps({"finished": clock()}) + "\n")
    return ctx


def _forever():
    while True:
        signal.pause()


def _finish(path, rec, result, ctx, step, clock):
    rec.update(status=DONE, result=result, finished=clock())
    _write(path, rec)
    ctx.results[step.name] = result


def reset(base=None):
    """Remove every step record and the done marker; returns how many files went."""
    removed = 0
    directory = steps_dir(base)
    if directory.is_dir():
        for p in sorted(directory.glob("*.json")):
            p.unlink()
            removed += 1
    marker = done_marker(base)
    if marker.exists():
        marker.unlink()
        removed += 1
    return removed
