"""Cluster tasks: work done once per cluster (bootstrap Galera, form RabbitMQ's cluster),
claimed by one controller through etcd and bound to its lease.

A task's claim is a key written under the claimant's lease, in a transaction
that holds only if nobody holds the claim and the task is not done::

    keys.TASK_CLAIMS + name   {"node", "since"}      (leased: gone with its agent)
    keys.TASKS + name         {"done", "by", "version", "result"}

The claimant runs the task (every task is idempotent: a claimant that died
half way leaves work the next one repeats safely), then records it done with
the catalogue's version and lets go of the claim, in one transaction.  If
the claimant dies, its lease expires, the claim vanishes, and another
controller takes the task over on its next pass.  The others only wait for
"done"; they never poll a database.
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
                    result=data.get("result") or {}, at=data.get("at", 0))

    def claimant(self, name):
        entry = self.kv.get(keys.TASK_CLAIMS + name)
        return json.loads(entry.value).get("node") if entry else None

    def claim(self, name):
        """Claim task ``name``; True if this node holds it now (it may already)."""
        claim_key, done_key = keys.TASK_CLAIMS + name, keys.TASKS + name
        entry = self.kv.get(claim_key)
        if entry is not None:
            return json.loads(entry.value).get("node") == self.node_id
        if self.kv.get(done_key) is not None:
            return False
        value = json.dumps({"node": self.node_id, "since": self.clock()}).encode()
        return self.kv.txn([Compare(claim_key, 0), Compare(done_key, 0)],
                           [(claim_key, value, self.lease)])

    def finish(self, name, result=None):
        """Record task ``name`` done and let go of its claim, in one transaction."""
        claim_key, done_key = keys.TASK_CLAIMS + name, keys.TASKS + name
        entry = self.kv.get(claim_key)
        if entry is None or json.loads(entry.value).get("node") != self.node_id:
            raise TaskFailed(task=name, node=self.node_id,
                             detail="the claim was lost (the lease expired?) before it ended")
        record = {"done": True, "by": self.node_id, "version": self.version,
                  "result": result or {}, "at": self.clock()}
        if not self.kv.txn([Compare(claim_key, entry.mod_revision), Compare(done_key, 0)],
                           [(done_key, json.dumps(record).encode())], [claim_key]):
            raise TaskFailed(task=name, node=self.node_id,
                             detail="its records changed while it ran")

    def release(self, name):
        """Let go of the claim without recording done (the task failed here)."""
        entry = self.kv.get(keys.TASK_CLAIMS + name)
        if entry is not None and json.loads(entry.value).get("node") == self.node_id:
            self.kv.txn([Compare(keys.TASK_CLAIMS + name, entry.mod_revision)], (),
                        [keys.TASK_CLAIMS + name])

    def run(self, name, func, *args):
        """Claim ``name`` and run ``func(*args)`` (its result: a dict) if this node got it.

        :returns: ``"done"`` (done already, or done now), ``"waiting"`` (another node
            holds it) or raises :class:`TaskFailed` (claim released, retried later).
        """
        if self.done(name) is not None:
            return "done"
        if not self.claim(name):
            return "waiting"
        LOG.info("cluster task %s: claimed by %s", name, self.node_id)
        try:
            result = func(*args)
        except Exception as exc:        # noqa: BLE001 - the claim goes back whatever failed
            self.release(name)
            raise TaskFailed(task=name, node=self.node_id, detail=str(exc) or
                             exc.__class__.__name__) from exc
        self.finish(name, result)
        LOG.info("cluster task %s: done", name)
        return "done"
