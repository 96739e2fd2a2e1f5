"""etcd v3 through its JSON gateway: the :class:`rackforge.kvstore.KVStore` of a real rack.

The gateway (``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/lease/*``, ``/v3/watch``,
``/v3/cluster/member/*``, ``/v3/maintenance/*``) is spoken with ``requests``
directly: a client library hides exactly what failover has to tell apart
(see :class:`EtcdKV`).
"""

import base64
import json
import time
import urllib.parse

from rackforge import errors
from rackforge.kvstore import (CONNECT_TIMEOUT, DEFAULT_ENDPOINT, MEMBER_ERRORS, POOL_SIZE,
                               Entry, Event, KVStore, RegistryRejected, RegistryUnavailable,
                               WatchCompacted)


def _put(key, value, lease=0):
    put = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = int(lease)
    return put


def _b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def _unb64(text):
    return base64.b64decode(text or "")


def _prefix_end(prefix):
    """etcd's range_end for "every key starting with ``prefix``"."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


class _Uncertain(Exception):
    """A write reached etcd, or may have, and its answer was lost."""

    def __init__(self, endpoint, detail):
        super().__init__(detail)
        self.endpoint, self.detail = endpoint, detail


def _checked(endpoints):
    endpoints = list(endpoints)
    for ep in endpoints:
        url = urllib.parse.urlsplit(ep)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise errors.ConfigError(
                "etcd endpoint '%s' is not a URL like http://10.0.0.1:2379; "
                "fix --etcd or RACKFORGE_ETCD" % ep)
    if not endpoints:
        raise errors.ConfigError("no etcd endpoint given; fix --etcd or RACKFORGE_ETCD")
    return endpoints


class EtcdKV(KVStore):
    """etcd v3 through its JSON gateway, failing over between endpoints.

    Every call has one deadline (``timeout`` seconds) shared by the endpoints
    it tries: each attempt gets the time left divided by the endpoints left,
    and at most :data:`CONNECT_TIMEOUT` to connect.  So with a hung member
    first (it accepts, never answers) and a live one second, a call still
    succeeds within its timeout, and later calls start at the live one.

    What the endpoint said decides what happens next:

    - it could not be reached (refused, no route, connect timeout): the next
      endpoint, since nothing was sent;
    - TLS failed, or it answered 4xx: :class:`RegistryRejected`, at once; no
      other member will think differently;
    - a read timed out, the connection broke mid-answer, or it answered 5xx
      (no leader, a proposal timed out): a read goes on to the next endpoint;
      a transaction *may have been applied*, so it is never simply sent
      again: the keys are read back first, and the transaction counts as
      applied if they hold what it wrote, is sent again only if its compares
      still hold, and is reported lost (False, as a lost race) otherwise.
    """

    def __init__(self, endpoint=None, timeout=10, ca_cert=None, cert=None, key=None):
        """``endpoint``: one URL, or several (a list or comma-separated)."""
        import requests
        import requests.adapters

        if isinstance(endpoint, str):
            endpoint = [e.strip() for e in endpoint.split(",") if e.strip()]
        self.endpoints = _checked(endpoint or [DEFAULT_ENDPOINT])
        self.timeout = timeout
        session = requests.Session()
        # the cluster CA, not $REQUESTS_CA_BUNDLE (which requests lets override the
        # session's), and never a proxy for the rack's own etcd
        session.trust_env = False
        session.verify = ca_cert if ca_cert else True
        if cert and key:
            session.cert = (cert, key)
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self._session = session
        self._client_file = cert or "client.json"
        self._current = 0

    @property
    def endpoint(self):
        endpoints = self.endpoints
        return endpoints[self._current % len(endpoints)]

    def set_endpoints(self, endpoints):
        """Fail over between ``endpoints`` from now on (etcd's members changed).  One
        assignment: a call in another thread works on the old list or the new one."""
        self.endpoints = _checked(endpoints)

    # -- the gateway -----------------------------------------------------------------
    def _post(self, path, body, write=False, deadline=None):
        """POST ``body`` to ``/v3/path`` on the first endpoint that answers; its JSON.

        :param write: a request that changes etcd: an answer lost after it was
            sent raises :class:`_Uncertain` instead of going on elsewhere.
        """
        import requests

        deadline = deadline or time.monotonic() + self.timeout
        endpoints = self.endpoints
        n = len(endpoints)
        tried = []
        for i in range(n):
            index = (self._current + i) % n
            ep = endpoints[index]
            left = deadline - time.monotonic()
            if left <= 0:
                break
            share = left / (n - i)
            try:
                resp = self._session.post(ep.rstrip("/") + "/v3/" + path, json=body,
                                          timeout=(min(share, CONNECT_TIMEOUT), share))
            except requests.exceptions.SSLError as exc:
                if _tls_refusal(exc):
                    raise RegistryRejected(endpoint=ep, client_file=self._client_file,
                                           detail="TLS: %s" % _short(exc)) from None
                # the handshake broke off (a member starting or going down): nothing
                # was sent yet
                tried.append("%s: TLS handshake cut: %s" % (ep, _short(exc)))
                continue
            except requests.exceptions.ConnectTimeout:
                tried.append("%s: no answer to connect within %.1fs"
                             % (ep, min(share, CONNECT_TIMEOUT)))
                continue
            except requests.exceptions.ReadTimeout:
                if write:
                    raise _Uncertain(ep, "no answer within %.1fs" % share) from None
                tried.append("%s: no answer within %.1fs" % (ep, share))
                continue
            except requests.exceptions.ConnectionError as exc:
                detail = _short(exc)
                if write and not _never_sent(exc):
                    raise _Uncertain(ep, detail) from None
                tried.append("%s: %s" % (ep, detail))
                continue
            if resp.status_code == 200:
                self._current = index
                try:
                    return resp.json()
                except ValueError:
                    raise RegistryUnavailable(endpoint=ep, detail="answer is not JSON") \
                        from None
            message = _etcd_message(resp)
            if 400 <= resp.status_code < 500:
                raise RegistryRejected(endpoint=ep, client_file=self._client_file,
                                       detail="HTTP %d %s" % (resp.status_code, message))
            if write:
                raise _Uncertain(ep, "HTTP %d %s" % (resp.status_code, message))
            tried.append("%s: HTTP %d %s" % (ep, resp.status_code, message))
        if not tried:
            tried.append("no time left of %ss" % self.timeout)
        raise RegistryUnavailable(endpoint=",".join(endpoints),
                                  detail="; ".join(tried)[:400])

    @staticmethod
    def _entry(kv):
        return Entry(_unb64(kv["key"]).decode(), _unb64(kv.get("value")),
                     int(kv.get("mod_revision", 0)), int(kv.get("create_revision", 0)),
                     int(kv.get("lease", 0)))

    def revision(self):
        header = self._post("kv/range", {"key": _b64("\0"), "count_only": True})["header"]
        return int(header["revision"])

    # -- leases --------------------------------------------------------------------------
    def lease_grant(self, ttl):
        return int(self._post("lease/grant", {"TTL": int(ttl), "ID": 0})["ID"])

    def lease_keepalive(self, lease):
        result = self._post("lease/keepalive", {"ID": int(lease)}).get("result") or {}
        return int(result.get("TTL", 0))

    def lease_revoke(self, lease):
        try:
            self._post("lease/revoke", {"ID": int(lease)})
        except RegistryRejected as exc:
            if "lease not found" not in str(exc):
                raise

    # -- watches -------------------------------------------------------------------------
    def watch(self, prefix, after, timeout):
        """One watch stream, read until the first events or ``timeout``; a lost stream
        is a timeout (the caller reads the state again: level-triggered)."""
        import requests

        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)),
                                   "start_revision": int(after) + 1}}
        ep = self.endpoint
        try:
            resp = self._session.post(ep.rstrip("/") + "/v3/watch", json=body, stream=True,
                                      timeout=(CONNECT_TIMEOUT, timeout))
        except requests.exceptions.RequestException as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise RegistryUnavailable(endpoint=ep, detail=_short(exc)) from None
        events, revision = [], int(after)
        try:
            for line in resp.iter_lines():
                if not line:
                    continue
                result = json.loads(line).get("result") or {}
                if result.get("compact_revision") and int(result["compact_revision"]) > 0:
                    raise WatchCompacted(revision=after, endpoint=ep, detail="compacted")
                for ev in result.get("events") or []:
                    kv = ev.get("kv") or {}
                    rev = int(kv.get("mod_revision", 0))
                    events.append(Event(ev.get("type", "PUT"), _unb64(kv["key"]).decode(),
                                        _unb64(kv.get("value")), rev))
                    revision = max(revision, rev)
                if events:
                    break
        except (requests.exceptions.RequestException, ValueError):
            pass            # a timeout or a lost stream: no events, read again
        finally:
            resp.close()
        return events, revision

    def _range(self, key, range_end=None, deadline=None):
        body = {"key": _b64(key)}
        if range_end is not None:
            body.update(range_end=_b64(range_end), sort_order="ASCEND", sort_target="KEY")
        return [self._entry(kv) for kv in
                self._post("kv/range", body, deadline=deadline).get("kvs") or []]

    def get(self, key):
        found = self._range(key)
        return found[0] if found else None

    def get_prefix(self, prefix):
        return self._range(prefix, _prefix_end(prefix))

    def txn(self, compares, puts=(), deletes=()):
        compares, puts, deletes = list(compares), list(puts), list(deletes)
        body = {
            "compare": [{"key": _b64(c.key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": c.mod_revision} for c in compares],
            "success": ([{"request_put": _put(*put)} for put in puts]
                        + [{"request_delete_range": {"key": _b64(k)}} for k in deletes]),
            "failure": [],
        }
        deadline = time.monotonic() + self.timeout
        last = None
        while time.monotonic() < deadline:
            try:
                return bool(self._post("kv/txn", body, write=True,
                                       deadline=deadline).get("succeeded", False))
            except _Uncertain as exc:
                last = exc
                # read it back elsewhere before anything is sent again
                endpoints = self.endpoints
                self._current = (endpoints.index(exc.endpoint) + 1 if exc.endpoint in
                                 endpoints else 0) % len(endpoints)
                outcome = self._settle(compares, puts, deletes, deadline)
                if outcome is not None:
                    return outcome
        raise RegistryUnavailable(endpoint=last.endpoint if last else self.endpoint,
                                  detail="a transaction's answer was lost (%s) and etcd could "
                                  "not be read back in time" % (last.detail if last else "-"))

    def _settle(self, compares, puts, deletes, deadline):
        """After a lost answer: True if the transaction was applied, False if it can no
        longer apply, None to send it again (its compares still hold)."""
        try:
            now = {key: self._range(key, deadline=deadline)
                   for key in {c.key for c in compares} | {p[0] for p in puts} | set(deletes)}
        except RegistryUnavailable:
            return None if time.monotonic() < deadline else False
        current = {k: (v[0] if v else None) for k, v in now.items()}
        applied = (all(current[p[0]] is not None and current[p[0]].value == bytes(p[1])
                       for p in puts)
                   and all(current[k] is None for k in deletes))
        if applied and (puts or deletes):
            return True
        holds = all((current[c.key].mod_revision if current[c.key] else 0) == c.mod_revision
                    for c in compares)
        return None if holds else False

    # -- maintenance (rackforge cluster status) --------------------------------------
    def member_status(self, endpoint, timeout=3):
        """``/v3/maintenance/status`` of one member: ``{dbSize, dbSizeInUse, leader,
        header: {member_id}, raftIndex, errors?}``."""
        import requests

        try:
            resp = self._session.post(endpoint.rstrip("/") + "/v3/maintenance/status", json={},
                                      timeout=(min(timeout, CONNECT_TIMEOUT), timeout))
        except requests.exceptions.RequestException as exc:
            raise RegistryUnavailable(endpoint=endpoint, detail=_short(exc)) from None
        if resp.status_code != 200:
            raise RegistryUnavailable(endpoint=endpoint, detail="HTTP %d %s"
                                      % (resp.status_code, _etcd_message(resp)))
        return resp.json()

    def alarms(self):
        """The cluster's raised alarms: ``[{memberID, alarm}]`` (NOSPACE: read-only)."""
        return self._post("maintenance/alarm", {"action": "GET"}).get("alarms") or []

    # -- membership (the controllers' etcd cluster; see rackforge.cluster.etcd) -----
    def _member_call(self, path, body, write=True):
        try:
            return self._post("cluster/member/" + path, body, write=write)
        except _Uncertain as exc:
            raise RegistryUnavailable(endpoint=exc.endpoint, detail=exc.detail) from None
        except (RegistryUnavailable, RegistryRejected) as exc:
            text = str(exc)
            for needle, cls in MEMBER_ERRORS:
                if needle in text:
                    raise cls(detail=text[:300]) from None
            raise

    def members(self):
        """The cluster's members: ``[{ID, name, peerURLs, clientURLs, isLearner}]``."""
        return self._member_call("list", {}, write=False).get("members") or []

    def member_add(self, peer_urls, learner=False):
        """Add a member; returns the member list after the change."""
        result = self._member_call("add", {"peerURLs": list(peer_urls),
                                           "isLearner": bool(learner)})
        return result.get("members") or []

    def member_promote(self, member_id):
        """Make the learner ``member_id`` a voting member."""
        return self._member_call("promote", {"ID": member_id})

    def member_remove(self, member_id):
        """Remove the member ``member_id`` (a node's factory reset: its own); returns the
        member list after the change."""
        return self._member_call("remove", {"ID": member_id}).get("members") or []


def _short(exc):
    """The innermost reason of a requests exception, on one line."""
    text = str(exc)
    for marker in ("Caused by ", "reason: "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return " ".join(text.split())[:200]


def _tls_refusal(exc):
    """True when TLS itself said no: a certificate we or the server would not accept."""
    text = str(exc).lower()
    return any(s in text for s in ("certificate", "alert", "unknown ca", "wrong version"))


def _never_sent(exc):
    """True when a ConnectionError happened before the request left (no connection)."""
    text = str(exc)
    return any(s in text for s in ("NewConnectionError", "Connection refused",
                                   "No route to host", "Network is unreachable",
                                   "Name or service not known", "Failed to establish"))


def _etcd_message(resp):
    try:
        data = resp.json()
    except ValueError:
        return " ".join(resp.text.split())[:200]
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or "")[:200]
    return ""
