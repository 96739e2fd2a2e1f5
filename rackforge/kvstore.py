"""Key-value stores with compare-and-set, leases and watches: etcd, and an in-memory twin.

The node registry, the cluster's records and the node agent are written
against the small interface below, so the in-memory store the unit tests use
runs the very same code as etcd does (:mod:`rackforge.etcdkv` is etcd).
What is here: reads with revisions, prefix ranges, one transaction shape
("if these keys are at these revisions, apply these puts and deletes"),
leases (a key written under a lease goes when the lease expires: a dead
node's status expires with it), and watches (wait until something under a
prefix changes after a revision).

This node's way to etcd, written at first boot, is ``client.json``
(:func:`write_client`, :func:`read_client`).
"""

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rackforge import errors, paths
from rackforge.fileutil import atomic_write, make_dirs

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
POOL_SIZE = 64
CONNECT_TIMEOUT = 2.0       # a LAN connect takes milliseconds; a dead host never answers


class RegistryUnavailable(errors.RackforgeError):
    message = ("the node registry (etcd at {endpoint}) does not answer: {detail}; "
               "check that etcd runs there, or point --etcd / RACKFORGE_ETCD at it")
    retryable = True


class RegistryRejected(errors.RackforgeError):
    """etcd answered, and said no (TLS, a 4xx): asking again, or elsewhere, cannot help."""
    message = ("the node registry (etcd at {endpoint}) refused the request: {detail}; "
               "check this node's certificate in {client_file} and the cluster CA")


class LearnerBusy(RegistryUnavailable):
    message = "etcd admits one learner at a time: {detail}"


class LearnerNotReady(RegistryUnavailable):
    message = "the learner is not in sync with the leader yet: {detail}"


class MemberNotLearner(RegistryRejected):
    message = "the member is already a voting member: {detail}"


#: etcd's error texts for the membership calls (etcdserver/errors.go), translated once here
MEMBER_ERRORS = (
    ("too many learner members", LearnerBusy),
    ("in sync with leader", LearnerNotReady),
    ("can only promote a learner member", MemberNotLearner),
)


class WatchCompacted(RegistryUnavailable):
    """The revision a watch asked for is gone (compacted): read everything again."""
    message = "etcd compacted its history past revision {revision}; re-reading the state"


@dataclass(frozen=True)
class Entry:
    """One key as read: its value and the revisions compare-and-set needs."""
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Compare:
    """The key must be at ``mod_revision`` (0: the key must not exist)."""
    key: str
    mod_revision: int


@dataclass(frozen=True)
class Event:
    """A change seen by a watch: ``PUT`` (``value`` set) or ``DELETE``."""
    type: str
    key: str
    value: bytes
    mod_revision: int


class KVStore:
    """Interface of the stores the registry and the node agent run on."""

    def get(self, key):
        """The :class:`Entry` at ``key``, or None."""
        raise NotImplementedError

    def get_prefix(self, prefix):
        """Every :class:`Entry` whose key starts with ``prefix``, sorted by key."""
        raise NotImplementedError

    def revision(self):
        """The store's current revision (a watch from it sees every later change)."""
        raise NotImplementedError

    def txn(self, compares, puts=(), deletes=()):
        """Apply ``puts`` ((key, bytes) or (key, bytes, lease id)) and ``deletes`` (keys)
        atomically.

        :returns: True if every :class:`Compare` held and the writes were made,
            False (and nothing written) otherwise.
        """
        raise NotImplementedError

    def lease_grant(self, ttl):
        """A new lease of ``ttl`` seconds; returns its id (an int)."""
        raise NotImplementedError

    def lease_keepalive(self, lease):
        """Renew ``lease``; returns its TTL in seconds, 0 if it expired (its keys gone)."""
        raise NotImplementedError

    def lease_revoke(self, lease):
        """End ``lease`` now: every key written under it goes."""
        raise NotImplementedError

    def watch(self, prefix, after, timeout):
        """Wait up to ``timeout`` seconds for changes under ``prefix`` after revision
        ``after``; returns ``(events, revision)``: the :class:`Event` list (empty on a
        timeout) and the revision to watch from next.

        :raises WatchCompacted: ``after`` is older than the kept history.
        """
        raise NotImplementedError


class MemoryKV(KVStore):
    """A store in memory with etcd's revision, lease and watch semantics; for tests and
    dry runs.  ``clock`` (seconds) decides when leases expire."""

    def __init__(self, clock=time.monotonic):
        self._data = {}
        self._revision = 0
        self._log = []                  # (revision, Event), for watches
        self._leases = {}               # id -> (ttl, expires at)
        self._ids = itertools.count(7001)
        self._clock = clock
        self._cond = threading.Condition()

    # -- expiry (lazily, at every access) --------------------------------------------
    def _expire(self):
        now = self._clock()
        gone = [lease for lease, (_, at) in self._leases.items() if at <= now]
        for lease in gone:
            self._drop_lease(lease)

    def _drop_lease(self, lease):
        self._leases.pop(lease, None)
        keys = [k for k, e in self._data.items() if e.lease == lease]
        if keys:
            self._revision += 1
            for key in keys:
                del self._data[key]
                self._log.append((self._revision, Event("DELETE", key, b"", self._revision)))
            self._cond.notify_all()

    # -- reads -------------------------------------------------------------------------
    def get(self, key):
        with self._cond:
            self._expire()
            return self._data.get(key)

    def get_prefix(self, prefix):
        with self._cond:
            self._expire()
            return [self._data[k] for k in sorted(self._data) if k.startswith(prefix)]

    def revision(self):
        with self._cond:
            self._expire()
            return self._revision

    # -- writes ------------------------------------------------------------------------
    def txn(self, compares, puts=(), deletes=()):
        with self._cond:
            self._expire()
            for c in compares:
                entry = self._data.get(c.key)
                if (entry.mod_revision if entry else 0) != c.mod_revision:
                    return False
            for put in puts:
                if len(put) > 2 and put[2] and put[2] not in self._leases:
                    raise RegistryUnavailable(endpoint="memory",
                                              detail="lease %s not found" % put[2])
            self._revision += 1
            for put in puts:
                key, value = put[0], put[1]
                lease = put[2] if len(put) > 2 else 0
                old = self._data.get(key)
                created = old.create_revision if old else self._revision
                self._data[key] = Entry(key, bytes(value), self._revision, created, lease or 0)
                self._log.append((self._revision,
                                  Event("PUT", key, bytes(value), self._revision)))
            for key in deletes:
                if self._data.pop(key, None) is not None:
                    self._log.append((self._revision,
                                      Event("DELETE", key, b"", self._revision)))
            self._cond.notify_all()
            return True

    # -- leases ------------------------------------------------------------------------
    def lease_grant(self, ttl):
        with self._cond:
            lease = next(self._ids)
            self._leases[lease] = (ttl, self._clock() + ttl)
            return lease

    def lease_keepalive(self, lease):
        with self._cond:
            self._expire()
            if lease not in self._leases:
                return 0
            ttl = self._leases[lease][0]
            self._leases[lease] = (ttl, self._clock() + ttl)
            return ttl

    def lease_revoke(self, lease):
        with self._cond:
            self._drop_lease(lease)

    # -- watches -----------------------------------------------------------------------
    def watch(self, prefix, after, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._expire()
                events = [e for rev, e in self._log if rev > after and e.key.startswith(prefix)]
                if events or time.monotonic() >= deadline:
                    return events, max([after] + [e.mod_revision for e in events])
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))


def client_file():
    """``/etc/rackforge/etcd/client.json``: ``{endpoints, ca_cert, cert, key}``, 0600."""
    return Path(os.environ.get("RACKFORGE_ETCD_CLIENT",
                               paths.config_dir() / "etcd" / "client.json"))


def write_client(endpoints, tls, path=None):
    """Record how rackforge on this node reaches etcd (first boot writes it)."""
    path = Path(path or client_file())
    make_dirs(path.parent, 0o750)
    data = {"endpoints": list(endpoints), **tls}
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode=0o600)


def read_client(path=None):
    """``(endpoints, tls)`` from ``client.json``, or None when there is none."""
    path = Path(path or client_file())
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise errors.ConfigError("%s is unreadable (%s); run 'rackforge firstboot reset --yes' "
                                 "and reboot, or pass --etcd" % (path, exc)) from None
    tls = {k: data[k] for k in ("ca_cert", "cert", "key") if data.get(k)}
    return list(data.get("endpoints") or []), tls
