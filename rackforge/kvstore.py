"""Key-value stores with compare-and-set transactions: etcd, and an in-memory twin.

The node registry (``rackforge.registry``) is written against the small
interface below, so that the in-memory store used by unit tests runs the very
same registry code as etcd does.  Only what the registry needs is here:
reads with revisions, prefix ranges, and one transaction shape ("if these
keys are at these revisions, apply these puts and deletes").

etcd is spoken to through its v3 JSON gateway with ``etcd3gw`` (the client
OpenStack's tooz uses); library errors are translated here, once.
"""

import threading
import urllib.parse
from dataclasses import dataclass

from rackforge import errors

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
POOL_SIZE = 64


class RegistryUnavailable(errors.RackforgeError):
    message = ("the node registry (etcd at {endpoint}) does not answer: {detail}; "
               "check that etcd runs there, or point --etcd / RACKFORGE_ETCD at it")
    retryable = True


@dataclass(frozen=True)
class Entry:
    """One key as read: its value and the revisions compare-and-set needs."""
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class Compare:
    """The key must be at ``mod_revision`` (0: the key must not exist)."""
    key: str
    mod_revision: int


class KVStore:
    """Interface of the stores the registry runs on."""

    def get(self, key):
        """The :class:`Entry` at ``key``, or None."""
        raise NotImplementedError

    def get_prefix(self, prefix):
        """Every :class:`Entry` whose key starts with ``prefix``, sorted by key."""
        raise NotImplementedError

    def txn(self, compares, puts=(), deletes=()):
        """Apply ``puts`` ((key, bytes) pairs) and ``deletes`` (keys) atomically.

        :returns: True if every :class:`Compare` held and the writes were made,
            False (and nothing written) otherwise.
        """
        raise NotImplementedError


class MemoryKV(KVStore):
    """A store in memory with etcd's revision semantics; for tests and dry runs."""

    def __init__(self):
        self._data = {}
        self._revision = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            return self._data.get(key)

    def get_prefix(self, prefix):
        with self._lock:
            return [self._data[k] for k in sorted(self._data) if k.startswith(prefix)]

    def txn(self, compares, puts=(), deletes=()):
        with self._lock:
            for c in compares:
                entry = self._data.get(c.key)
                if (entry.mod_revision if entry else 0) != c.mod_revision:
                    return False
            self._revision += 1
            for key, value in puts:
                old = self._data.get(key)
                created = old.create_revision if old else self._revision
                self._data[key] = Entry(key, bytes(value), self._revision, created)
            for key in deletes:
                self._data.pop(key, None)
            return True


def _etcd_message(error):
    """etcd's error text from an etcd3gw exception's body (``{"error": ...}``), if any."""
    import json

    text = getattr(error, "detail_text", None)
    if not text:
        return ""
    try:
        return str(json.loads(text).get("error") or "")
    except (ValueError, AttributeError):
        return str(text)[:200]


class EtcdKV(KVStore):
    """etcd v3 through its JSON gateway."""

    def __init__(self, endpoint=None, timeout=10, ca_cert=None, cert=None, key=None):
        """``endpoint``: one URL, or several (a list or comma-separated): a call that
        cannot connect to one goes on to the next (a controller down)."""
        # keep `rackforge --help` free of requests' import time.  The class, not
        # etcd3gw.client(): Debian 12's etcd3gw 2.0 factory takes no api_path, and
        # its default (/v3alpha/) is gone from etcd 3.4.
        import requests.adapters
        from etcd3gw import exceptions
        from etcd3gw.client import Etcd3Client

        if isinstance(endpoint, str):
            endpoint = [e.strip() for e in endpoint.split(",") if e.strip()]
        self.endpoints = list(endpoint or [DEFAULT_ENDPOINT])
        self._clients = []
        for ep in self.endpoints:
            url = urllib.parse.urlsplit(ep)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise errors.ConfigError(
                    "etcd endpoint '%s' is not a URL like http://10.0.0.1:2379; "
                    "fix --etcd or RACKFORGE_ETCD" % ep)
            client = Etcd3Client(
                host=url.hostname, port=url.port or 2379, protocol=url.scheme,
                ca_cert=ca_cert, cert_cert=cert, cert_key=key, timeout=timeout,
                api_path="/v3/")
            # the cluster CA, not $REQUESTS_CA_BUNDLE (which requests lets override the
            # session's), and never a proxy for the rack's own etcd
            client.session.trust_env = False
            # one store is shared by the join service's threads
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE)
            client.session.mount("https://", adapter)
            client.session.mount("http://", adapter)
            self._clients.append(client)
        self._exceptions = exceptions
        self._current = 0

    @property
    def endpoint(self):
        return self.endpoints[self._current]

    @property
    def _client(self):
        return self._clients[self._current]

    def _call(self, call):
        """``call(client)`` on the current endpoint's client; on a refused connection the
        next endpoint's."""
        import requests

        for _ in range(len(self._clients)):
            try:
                return call(self._client)
            except self._exceptions.ConnectionFailedError as e:
                error = e
                self._current = (self._current + 1) % len(self._clients)
            except (self._exceptions.Etcd3Exception, requests.RequestException) as e:
                error = e
                break
        detail = " ".join(("%s %s" % (_etcd_message(error), error)).split())[:200] \
            or error.__class__.__name__
        raise RegistryUnavailable(endpoint=self.endpoint, detail=detail) from error

    @staticmethod
    def _entry(value, meta):
        key = meta["key"]
        return Entry(key.decode() if isinstance(key, bytes) else key, value,
                     int(meta.get("mod_revision", 0)), int(meta.get("create_revision", 0)))

    def get(self, key):
        found = self._call(lambda c: c.get(key, metadata=True))
        return self._entry(*found[0]) if found else None

    def get_prefix(self, prefix):
        found = self._call(
            lambda c: c.get_prefix(prefix, sort_order="ascend", sort_target="key"))
        return [self._entry(value, meta) for value, meta in found]

    def txn(self, compares, puts=(), deletes=()):
        from etcd3gw.utils import _encode

        body = {
            "compare": [{"key": _encode(c.key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": c.mod_revision} for c in compares],
            "success": ([{"request_put": {"key": _encode(k), "value": _encode(v)}}
                         for k, v in puts]
                        + [{"request_delete_range": {"key": _encode(k)}} for k in deletes]),
            "failure": [],
        }
        result = self._call(lambda c: c.transaction(body))
        return bool(result.get("succeeded", False))

    # -- membership (the controllers' etcd cluster; see rackforge.firstboot.etcd) ----
    def _member_call(self, path, body):
        from rackforge.firstboot import etcd as etcd_mod

        try:
            return self._call(lambda c: c.post(c.get_url(path), json=body))
        except RegistryUnavailable as e:
            cause = e.__cause__
            # etcd's own message is the body (detail_text); str() is the HTTP reason
            text = " ".join(("%s %s" % (getattr(cause, "detail_text", "") or "",
                                        cause)).split())
            for needle, cls in etcd_mod.MEMBER_ERRORS:
                if needle in text:
                    raise cls(detail=text[:200]) from None
            raise

    def members(self):
        """The cluster's members: ``[{ID, name, peerURLs, clientURLs, isLearner}]``."""
        return self._member_call("/cluster/member/list", {}).get("members") or []

    def member_add(self, peer_urls, learner=False):
        """Add a member; returns the member list after the change."""
        result = self._member_call("/cluster/member/add",
                                   {"peerURLs": list(peer_urls), "isLearner": bool(learner)})
        return result.get("members") or []

    def member_promote(self, member_id):
        """Make the learner ``member_id`` a voting member."""
        return self._member_call("/cluster/member/promote", {"ID": member_id})
