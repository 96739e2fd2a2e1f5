"""Each node's bring-up, kept in the registry: its steps, phase and last error.

``rackforge rack up`` may be stopped at any moment (Ctrl-C, a closed terminal,
the seed rebooting) and run again; it continues from what this record says.
In the manner of first boot's step journal (``firstboot/journal.py``), a step
with a side effect records its *intent* (``started``, with what it is about
to do) before acting and ``done`` after, so a run that died in between knows
what may already have happened.  One JSON value per node under
:data:`rackforge.keys.BRINGUP_NODES`, written by compare-and-set::

    {"node": ID, "name": NAME, "bmc": "ADDR:PORT",
     "phase": "booting", "since": T, "error": "last error line" | null,
     "steps": {"password": {"status": "started", "time": T, "pending": FERNET},
               "install": {"status": "done", ...}, "power": {...}, "disk": {...}},
     "disk": {the install answer's disk section}, "installing_rev": REVISION}

No secret is held in clear: a BMC password being set is ``pending`` as a
Fernet token under the cluster key, like the node's own BMC record.
``installing_rev`` is the registry revision of the node's move to
``installing``: an install record written after it (the install API's) means
this install has begun.
"""

import copy
import time
from dataclasses import dataclass, field

from rackforge import errors, keys
from rackforge.kvstore import Compare
from rackforge.record import JsonRecord

PREFIX = keys.BRINGUP_NODES
CAS_ATTEMPTS = 20
STARTED, DONE = "started", "done"
#: an error line kept in the record at most
MAX_ERROR = 300


class ProgressContended(errors.RackforgeError):
    message = ("the bring-up record of node {node} changed under {attempts} attempts to "
               "update it; is another 'rackforge rack up' running?")
    retryable = True


@dataclass
class Progress(JsonRecord):
    node: str
    name: str = ""
    bmc: str = ""
    phase: str = "enrolled"
    since: float = 0.0
    error: str = None
    steps: dict = field(default_factory=dict)
    disk: dict = None
    installing_rev: int = 0
    updated: float = 0.0

    def step(self, name):
        """The step's record (``{"status", "time", ...}``) or None."""
        return self.steps.get(name)

    def is_done(self, name):
        return (self.steps.get(name) or {}).get("status") == DONE


def began(record, install_entry):
    """Did this install's installer call the install API already?  Its install record
    (``install_entry``) was written after the move to ``installing`` the bring-up
    record remembers: etcd revisions, not clocks, so no two machines' clocks meet."""
    if install_entry is None:
        return False
    return record is None or install_entry.mod_revision > (record.installing_rev or 0)


def phase_of(node, record, install_entry):
    """What ``rack up`` calls the node's place: its state, except that ``installing``
    is ``booting`` until its installer called the install API."""
    if node.state == "installing":
        return "installing" if began(record, install_entry) else "booting"
    return node.state


def clip(text):
    """One line of at most :data:`MAX_ERROR` characters, safe to show."""
    line = " ".join(errors.printable(text).split())
    return line if len(line) <= MAX_ERROR else line[:MAX_ERROR - 3] + "..."


class ProgressStore:
    """Bring-up records on a :class:`rackforge.kvstore.KVStore`."""

    def __init__(self, kv, clock=time.time):
        self.kv = kv
        self.clock = clock

    def get(self, node_id):
        entry = self.kv.get(PREFIX + node_id)
        return Progress.from_value(entry.value) if entry is not None else None

    def list(self):
        return [Progress.from_value(e.value) for e in self.kv.get_prefix(PREFIX)]

    def update(self, node_id, change, create=None):
        """Apply ``change(progress)`` by compare-and-set; ``create()`` makes the record
        when there is none (else a missing record is left missing and None returned).
        ``change`` may run more than once: a pure function of the record it is given."""
        key = PREFIX + node_id
        for _ in range(CAS_ATTEMPTS):
            entry = self.kv.get(key)
            if entry is None and create is None:
                return None
            old = Progress.from_value(entry.value) if entry else create()
            new = copy.deepcopy(old)
            change(new)
            if entry is not None and new == old:
                return new
            new.updated = self.clock()
            if self.kv.txn([Compare(key, entry.mod_revision if entry else 0)],
                           [(key, new.to_json())]):
                return new
        raise ProgressContended(node=node_id, attempts=CAS_ATTEMPTS)

    def start(self, node_id, step, **intent):
        """Record that ``step`` is about to act, with its intent, before it does."""
        now = self.clock()

        def change(p):
            p.steps[step] = dict(intent, status=STARTED, time=now)
        return self.update(node_id, change)

    def claim(self, node_id, step, **intent):
        """:meth:`start`, but only if no record of ``step`` exists: True when this call
        recorded the intent, False when another run (or an earlier one) had."""
        now, mine = self.clock(), []

        def change(p):
            mine.clear()
            if step not in p.steps:
                p.steps[step] = dict(intent, status=STARTED, time=now)
                mine.append(True)
        self.update(node_id, change)
        return bool(mine)

    def done(self, node_id, step, **result):
        """Record that ``step`` acted; its intent is dropped (it may hold a sealed
        password), its result kept."""
        now = self.clock()

        def change(p):
            p.steps[step] = dict(result, status=DONE, time=now)
        return self.update(node_id, change)

    def forget(self, node_id, *steps):
        """Drop ``steps`` (a new install: its power-on and boot device are to be done)."""
        def change(p):
            for step in steps:
                p.steps.pop(step, None)
        return self.update(node_id, change)

    def set(self, node_id, **fields):
        """Set plain fields (``phase``, ``since``, ``error``, ``disk``, ...)."""
        def change(p):
            for name, value in fields.items():
                setattr(p, name, value)
        return self.update(node_id, change)
