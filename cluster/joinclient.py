"""Joining a cluster, from the joining node's side.

In the manner of kubeadm's discovery: fetch the CA an endpoint presents over
an unverified TLS connection, check it against the pinned ``ca_sha256``
(:func:`ca.check_pin`), then open a connection *verified against that CA*
whose certificate carries the join-service usage (only a controller's join
service has one: a node's certificate, or a token holder's, never does),
and only then send the token and the node's certificate request.  A wrong
pin or a wrong certificate stops before the token leaves.

The node's key is its own: made on the node (:func:`ca.make_csr`), kept in
``state_dir()/pki/node.key`` and never sent; a resumed join presents the
same key, which is how the service knows it is the same node.

Every controller serves joins: :func:`join` tries each endpoint it was
given in turn while they fail in ways another controller might not (no
answer, a 5xx); a refusal (a 4xx: bad token, name taken) is final.

The same discipline serves the seed's other APIs a booting machine calls
without a token (the install API, discovery: ``bringup/``): :func:`post_pinned`
is one POST after the pin and the usage are checked, :func:`ask_pinned` asks
again while the seed does not answer or is busy, and stops at a refusal.
"""

import http.client
import json
import logging
import socket
import ssl
import time
import urllib.parse

from rackforge.cluster import ca as ca_mod
from rackforge.cluster.join import DEFAULT_PORT, JoinError, JoinRefused

LOG = logging.getLogger(__name__)
#: the largest answer :func:`post_pinned` reads
MAX_ANSWER = 64 * 1024
#: the statuses that are a refusal (final); anything else but 200 is asked again
REFUSED = (400, 403, 404, 409)


def _split(endpoint):
    u = urllib.parse.urlsplit(endpoint) if isinstance(endpoint, str) else None
    if u is None or u.scheme != "https" or not u.hostname:
        raise JoinError(endpoint=endpoint, detail="the endpoint must be https://HOST:PORT")
    return u.hostname, u.port or DEFAULT_PORT


def fetch_ca(endpoint, timeout=10, source=None):
    """The CA certificate the endpoint presents at ``GET /ca`` (not yet trusted)."""
    host, port = _split(endpoint)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE       # trust comes from the pin, checked next
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context,
                                       source_address=(source, 0) if source else None)
    try:
        conn.request("GET", "/ca")
        resp = conn.getresponse()
        data = resp.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        raise JoinError(endpoint=endpoint, detail="cannot fetch its CA (%s)" % exc) from None
    finally:
        conn.close()
    if resp.status != 200:
        raise JoinError(endpoint=endpoint, detail="GET /ca answered %d" % resp.status)
    return data


def connect_checked(endpoint, ca_pem, timeout, source=None):
    """A connection verified against ``ca_pem`` to a join service's certificate (the
    installer's requests to the install API go through it too)."""
    host, port = _split(endpoint)
    context = ssl.create_default_context(cadata=ca_pem.decode())
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context,
                                       source_address=(source, 0) if source else None)
    try:
        conn.connect()
    except ssl.SSLCertVerificationError as exc:
        conn.close()
        raise JoinError(endpoint=endpoint, detail="its certificate is not from the pinned CA "
                        "for this address (%s); nothing was sent" % exc.verify_message) from None
    except OSError as exc:
        conn.close()
        raise JoinError(endpoint=endpoint, detail=str(exc)) from None
    if not ca_mod.has_usage(conn.sock.getpeercert(binary_form=True), ca_mod.JOIN_SERVICE):
        conn.close()
        raise JoinError(endpoint=endpoint, detail="its certificate was not issued to a join "
                        "service; nothing was sent")
    return conn


def join_one(endpoint, token, pin, name, csr_pem, inventory=None, storage=False, role=None,
             timeout=30, source=None):
    """Join through one endpoint; returns the service's answer.

    :raises ca.CAPinMismatch: the endpoint's CA is not the pinned one (no token sent).
    :raises JoinRefused: the service refused (bad token, name taken, role refused).
    :raises JoinError: it could not be reached or answered garbage (retryable).
    """
    ca_pem = fetch_ca(endpoint, timeout=timeout, source=source)
    ca_mod.check_pin(ca_pem, pin, endpoint=endpoint)
    body = {"name": name, "csr": csr_pem.decode() if isinstance(csr_pem, bytes) else csr_pem,
            "inventory": inventory or {}, "storage": bool(storage)}
    if role:
        body["role"] = role
    data = json.dumps(body).encode()
    conn = connect_checked(endpoint, ca_pem, timeout, source)
    try:
        conn.request("POST", "/join", body=data,
                     headers={"Content-Type": "application/json",
                              "Authorization": "Bearer %s" % token})
        resp = conn.getresponse()
        raw = resp.read(1 << 20)
    except (OSError, http.client.HTTPException, socket.timeout) as exc:
        raise JoinError(endpoint=endpoint, detail=str(exc) or exc.__class__.__name__) \
            from None
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        raise JoinError(endpoint=endpoint, detail="answer %d is not JSON" % resp.status) \
            from None
    if resp.status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        cls = JoinError if resp.status >= 500 or resp.status == 429 else JoinRefused
        raise cls(endpoint=endpoint, detail=error or "HTTP %d" % resp.status)
    if "key" in answer:
        raise JoinError(endpoint=endpoint, detail="it answered with a private key; a join "
                        "service never makes a node's key")
    return answer


def join(endpoints, token, pin, name, csr_pem, **kw):
    """Join through the first of ``endpoints`` that answers; see :func:`join_one`."""
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    failures = []
    for endpoint in endpoints:
        try:
            return join_one(endpoint, token, pin, name, csr_pem, **kw)
        except JoinError as exc:
            failures.append(str(exc))
    raise JoinError(endpoint=", ".join(endpoints) or "(none)",
                    detail="no endpoint took the join: " + " | ".join(failures)[:600])


def post_pinned(endpoint, pin, path, body, timeout, max_answer=MAX_ANSWER, source=None):
    """``(status, JSON answer)`` of one ``POST path`` with ``body`` to the join service at
    ``endpoint``, sent only after its CA matched ``pin`` and its certificate carried the
    join-service usage.

    :raises ca.CAPinMismatch: the CA is not the pinned one (nothing sent).
    :raises JoinError: no answer, a certificate that is not a join service's (nothing
        sent), or an answer that is not JSON (retryable).
    """
    ca_pem = fetch_ca(endpoint, timeout=timeout, source=source)
    ca_mod.check_pin(ca_pem, pin, endpoint=endpoint)
    conn = connect_checked(endpoint, ca_pem, timeout, source)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read(max_answer + 1)
    except (OSError, http.client.HTTPException, socket.timeout) as exc:
        raise JoinError(endpoint=endpoint, detail=str(exc) or exc.__class__.__name__) \
            from None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        raise JoinError(endpoint=endpoint, detail="answer %d is not JSON" % resp.status) \
            from None


def ask_pinned(endpoint, pin, path, body, patience, refused, unavailable, timeout=30,
               clock=time.monotonic, sleep=time.sleep, on_retry=None, max_answer=MAX_ANSWER):
    """The 200 answer of :func:`post_pinned`, asked again (2 s doubling to 30 s) while the
    seed does not answer or answers anything but a refusal, for ``patience`` seconds.

    :param refused: ``detail -> exception`` raised at once for a refusal (:data:`REFUSED`)
    :param unavailable: ``detail -> exception`` raised when ``patience`` is spent
    :param on_retry: ``(detail, pause)`` before each pause (default: a log line)
    :raises ca.CAPinMismatch: at once, nothing sent.
    """
    deadline, pause, last = clock() + patience, 2.0, ""
    while True:
        try:
            status, answer = post_pinned(endpoint, pin, path, body, timeout, max_answer)
            if status == 200:
                return answer
            detail = (answer.get("error") if isinstance(answer, dict) else None) or \
                "HTTP %d" % status
            if status in REFUSED:
                raise refused(detail)
            last = detail
        except JoinError as exc:
            last = str(exc)
        if clock() + pause > deadline:
            raise unavailable(last[:300])
        if on_retry is None:
            LOG.info("%s: %s; asking again in %.0f s", endpoint, last, pause)
        else:
            on_retry(last, pause)
        sleep(pause)
        pause = min(pause * 2, 30.0)
