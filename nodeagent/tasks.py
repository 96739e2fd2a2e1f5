"""Cluster tasks: work done once per cluster (bootstrap Galera, form RabbitMQ's cluster),
claimed by one controller through etcd and bound to its lease.

A task's claim is a key written under the claimant's lease, in a transaction
that holds only if nobody holds the claim and the task is not done::

    keys.TASK_CLAIMS + name   {"node", "since", "after"}   (leased: gone with its agent)
    keys.TASKS + name         {"done", "by", "version", "inputs", "result"}

The claimant runs the task (every task is idempotent: a claimant that died
half way leaves work the next one repeats safely), then records it done with
the catalogue's version and lets go of the claim, in one transaction.  If
the claimant dies, its lease expires, the claim vanishes, and another
controller takes the task over on its next pass.  The others only wait for
"done"; they never poll a database.

A task that applies a secret inside a service (the SST user's password in
MariaDB, the broker user's in RabbitMQ) is done only for that secret's
version: its ``inputs`` (``{secret: version}``).  When an operator rotates the
secret, the inputs differ, and one controller claims the task again and
re-runs it with the new value; meanwhile nobody waits (the old value still
works until the task has run).
"""

import json
import logging
import time
from dataclasses import dataclass

from rackforge import errors, keys
from rackforge.kvstore import Compare

LOG = logging.getLogger(__name__)


class TaskFailed(errors.RackforgeError):
    message = "cluster task {task} failed on {node}: {detail}; the next pass tries again"
    retryable = True


@dataclass(frozen=True)
class Done:
    by: str
    version: str
    result: dict
    at: float
    inputs: dict = None

    def holds_for(self, inputs):
        return (self.inputs or {}) == (inputs or {})


class Tasks:
    """The cluster tasks as node ``node_id`` (holding ``lease``) sees them."""

    def __init__(self, kv, node_id, lease, version, clock=time.time):
        self.kv = kv
        self.node_id = node_id
        self.lease = lease
        self.version = version
        self.clock = clock

    def done(self, name):
        """The :class:`Done` record of task ``name``, or None."""
        entry = self.kv.get(keys.TASKS + name)
        if entry is None:
            return None
        data = json.loads(entry.value)
        return Done(by=data.get("by"), version=data.get("version"),
                    result=data.get("result") or {}, at=data.get("at", 0),
                    inputs=data.get("inputs") or {})

    def claimant(self, name):
        entry = self.kv.get(keys.TASK_CLAIMS + name)
        return json.loads(entry.value).get("node") if entry else None

    def claim(self, name, inputs=None):
        """Claim task ``name`` (to be done for ``inputs``); True if this node holds it now
        (it may already)."""
        claim_key, done_key = keys.TASK_CLAIMS + name, keys.TASKS + name
        entry = self.kv.get(claim_key)
        if entry is not None:
            return json.loads(entry.value).get("node") == self.node_id
        done = self.kv.get(done_key)
        if done is not None and self.done(name).holds_for(inputs):
            return False
        after = done.mod_revision if done else 0    # finish() holds only over this record
        value = json.dumps({"node": self.node_id, "since": self.clock(),
                            "after": after}).encode()
        return self.kv.txn([Compare(claim_key, 0), Compare(done_key, after)],
                           [(claim_key, value, self.lease)])

    def finish(self, name, result=None, inputs=None):
        """Record task ``name`` done (for ``inputs``) and let go of its claim, in one
        transaction."""
        claim_key, done_key = keys.TASK_CLAIMS + name, keys.TASKS + name
        entry = self.kv.get(claim_key)
        claim = json.loads(entry.value) if entry is not None else {}
        if claim.get("node") != self.node_id:
            raise TaskFailed(task=name, node=self.node_id,
                             detail="the claim was lost (the lease expired?) before it ended")
        record = {"done": True, "by": self.node_id, "version": self.version,
                  "inputs": inputs or {}, "result": result or {}, "at": self.clock()}
        if not self.kv.txn([Compare(claim_key, entry.mod_revision),
                            Compare(done_key, claim.get("after", 0))],
                           [(done_key, json.dumps(record).encode())], [claim_key]):
            raise TaskFailed(task=name, node=self.node_id,
                             detail="its records changed while it ran")

    def release(self, name):
        """Let go of the claim without recording done (the task failed here)."""
        entry = self.kv.get(keys.TASK_CLAIMS + name)
        if entry is not None and json.loads(entry.value).get("node") == self.node_id:
            self.kv.txn([Compare(keys.TASK_CLAIMS + name, entry.mod_revision)], (),
                        [keys.TASK_CLAIMS + name])

    def run(self, name, func, *args, inputs=None):
        """Claim ``name`` and run ``func(*args)`` (its result: a dict) if this node got it;
        a task done for other ``inputs`` is run again.

        :returns: ``"done"`` (done already, or done now), ``"waiting"`` (another node
            holds it) or raises :class:`TaskFailed` (claim released, retried later).
        """
        done = self.done(name)
        if done is not None and done.holds_for(inputs):
            return "done"
        if not self.claim(name, inputs):
            return "waiting"
        LOG.info("cluster task %s: claimed by %s", name, self.node_id)
        try:
            result = func(*args)
        except Exception as exc:        # noqa: BLE001 - the claim goes back whatever failed
            self.release(name)
            raise TaskFailed(task=name, node=self.node_id, detail=str(exc) or
                             exc.__class__.__name__) from exc
        self.finish(name, result, inputs)
        LOG.info("cluster task %s: done", name)
        return "done"
