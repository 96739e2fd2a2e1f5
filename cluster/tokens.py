"""Join tokens: short-lived, use-limited secrets a node presents to join the cluster.

In the manner of kubeadm's bootstrap tokens a token is ``ID.SECRET``: a
6-character public id and a 16-character secret, both ``[a-z0-9]``.  The
registry keeps only the secret's SHA-256, never the secret::

    /rackforge/tokens/<id>   {"id", "hash": "sha256:<hex>", "created", "expires",
                              "uses": N | null, "used": n, "used_by": [hints],
                              "description"}
    /rackforge/cluster       {"join_endpoint": URL, ...}   (written by the seed)

A token expires ``ttl`` seconds after it is created (one hour by default,
at most a day) and may carry a use limit.  :meth:`TokenStore.redeem` checks
the secret, the expiry and the limit and then spends one use in a single
compare-and-set transaction on the token's key; a wrong, expired or
used-up token is refused with one line and nothing is written.

A node that redeems again with the same ``node_hint`` (a join interrupted
by a power cut, retried on the next boot) is accepted without spending a
second use, as long as the token has not expired.

Time comes from an injectable clock so expiry is testable without waiting.
"""

import datetime
import hashlib
import hmac
import json
import re
import secrets
import string
import time
import urllib.parse
from dataclasses import dataclass, field

from rackforge import errors, keys
from rackforge.kvstore import Compare
from rackforge.record import JsonRecord

PREFIX = keys.TOKENS
CLUSTER_KEY = keys.CLUSTER
ID_LEN, SECRET_LEN = 6, 16
ALPHABET = string.ascii_lowercase + string.digits
TOKEN_RE = re.compile(r"^([a-z0-9]{%d})\.([a-z0-9]{%d})$" % (ID_LEN, SECRET_LEN))
ID_RE = re.compile(r"^[a-z0-9]{%d}$" % ID_LEN)
DEFAULT_TTL = 3600
MIN_TTL, MAX_TTL = 60, 24 * 3600
CAS_ATTEMPTS = 64
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(errors.RackforgeError):
    exit_code = 2


class TokenMalformed(TokenError):
    message = ("the join token of node {node} is not in the form ID.SECRET (6 and 16 "
               "lower-case letters or digits); copy it again from "
               "'rackforge cluster token create'")


class TokenRefused(TokenError):
    message = ("join token {id} refused for node {node}: unknown token or wrong secret; "
               "create a new one with 'rackforge cluster token create' on a controller")


class TokenExpired(TokenError):
    message = ("join token {id} refused for node {node}: it expired at {when}; "
               "create a new one with 'rackforge cluster token create' on a controller")


class TokenUsedUp(TokenError):
    message = ("join token {id} refused for node {node}: all {uses} of its uses are spent; "
               "create a new one with 'rackforge cluster token create --uses N'")


class TokenNotFound(TokenError):
    message = "no join token '{id}'; 'rackforge cluster token list' shows the tokens"


class BadTokenOption(errors.ConfigError):
    message = "{option} '{value}' is not valid: {why}"


class NoJoinEndpoint(errors.ConfigError):
    message = ("no join endpoint known ({why}); pass --endpoint https://SEED:PORT, "
               "or create the cluster on the seed first")


def hash_secret(secret):
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def parse_ttl(text):
    """``90``, ``90s``, ``30m``, ``1h``, ``1d`` -> seconds (60 s to 24 h)."""
    m = re.match(r"^\s*(\d+)\s*([smhd]?)\s*$", str(text).lower())
    if m is None:
        raise BadTokenOption(option="--ttl", value=text,
                             why="use a number of seconds or a duration like 30m or 1h")
    seconds = int(m.group(1)) * UNITS[m.group(2) or "s"]
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise BadTokenOption(option="--ttl", value=text,
                             why="a token lives from 1 minute to 24 hours (keep it short)")
    return seconds


def check_uses(uses):
    """``uses`` if it is a valid use limit (None: unlimited); raises :class:`BadTokenOption`."""
    if uses is not None and (isinstance(uses, bool) or not isinstance(uses, int) or uses < 1):
        raise BadTokenOption(option="--uses", value=uses, why="give a whole number >= 1")
    return uses


def _when(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ")


@dataclass
class TokenRecord(JsonRecord):
    """What the registry holds about one token (never the secret)."""
    id: str
    hash: str
    created: float
    expires: float
    uses: int = None            # None: unlimited until it expires
    used: int = 0
    used_by: list = field(default_factory=list)
    description: str = ""

    def state(self, now):
        if now >= self.expires:
            return "expired"
        if self.uses is not None and self.used >= self.uses:
            return "used up"
        return "valid"

    def public(self, now):
        """For listings: everything but the hash, with the state and times readable."""
        return {"id": self.id, "state": self.state(now), "description": self.description,
                "created": _when(self.created), "expires": _when(self.expires),
                "uses": self.uses, "used": self.used, "used_by": list(self.used_by)}


class TokenStore:
    """Join tokens on a :class:`rackforge.kvstore.KVStore`."""

    def __init__(self, kv, clock=time.time):
        self.kv = kv
        self.clock = clock

    def create(self, ttl=DEFAULT_TTL, uses=None, description=""):
        """A new token; returns ``(token_text, TokenRecord)``.  The text is shown once."""
        check_uses(uses)
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise BadTokenOption(option="--ttl", value=ttl,
                                 why="a token lives from 1 minute to 24 hours")
        for _ in range(CAS_ATTEMPTS):
            token_id = "".join(secrets.choice(ALPHABET) for _ in range(ID_LEN))
            secret = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LEN))
            now = self.clock()
            record = TokenRecord(id=token_id, hash=hash_secret(secret), created=now,
                                 expires=now + ttl, uses=uses,
                                 description=" ".join(str(description).split()))
            if self.kv.txn([Compare(PREFIX + token_id, 0)],
                           [(PREFIX + token_id, record.to_json())]):
                return "%s.%s" % (token_id, secret), record
        raise TokenError("could not find a free token id; delete old tokens "
                         "with 'rackforge cluster token delete'")

    def list(self):
        return [TokenRecord.from_value(e.value) for e in self.kv.get_prefix(PREFIX)]

    def get(self, token_id):
        entry = self.kv.get(PREFIX + token_id) if ID_RE.match(token_id or "") else None
        if entry is None:
            raise TokenNotFound(id=token_id)
        return TokenRecord.from_value(entry.value)

    def delete(self, token_id):
        record = self.get(token_id)
        self.kv.txn([], (), [PREFIX + token_id])
        return record

    def redeem(self, token, node_hint):
        """Check ``token`` for the node ``node_hint`` and spend one of its uses.

        One compare-and-set transaction on the token's key; on a lost race
        the token is read and checked again.

        :returns: the :class:`TokenRecord` after the redemption.
        :raises TokenMalformed, TokenRefused, TokenExpired, TokenUsedUp:
            nothing is written.
        """
        node = " ".join(str(node_hint or "").split()) or "(unnamed)"
        m = TOKEN_RE.match(str(token or "").strip())
        if m is None:
            raise TokenMalformed(node=node)
        token_id, secret = m.groups()
        key = PREFIX + token_id
        offered = hash_secret(secret)
        for _ in range(CAS_ATTEMPTS):
            entry = self.kv.get(key)
            if entry is None:
                raise TokenRefused(id=token_id, node=node)
            record = TokenRecord.from_value(entry.value)
            if not hmac.compare_digest(record.hash, offered):
                raise TokenRefused(id=token_id, node=node)
            if self.clock() >= record.expires:
                raise TokenExpired(id=token_id, node=node, when=_when(record.expires))
            if node in record.used_by:
                return record       # the same node again (interrupted join): no new use
            if record.uses is not None and record.used >= record.uses:
                raise TokenUsedUp(id=token_id, node=node, uses=record.uses)
            record.used += 1
            record.used_by.append(node)
            if self.kv.txn([Compare(key, entry.mod_revision)], [(key, record.to_json())]):
                return record
        raise TokenError("join token %s changed under %d attempts to redeem it for node %s; "
                         "try again" % (token_id, CAS_ATTEMPTS, node))


# -- the join bundle -----------------------------------------------------------------
def join_endpoint(kv, explicit=None):
    """The URL joining nodes connect to: ``explicit``, else the cluster record's."""
    url = explicit
    if not url:
        entry = kv.get(CLUSTER_KEY)
        if entry is None:
            raise NoJoinEndpoint(why="no cluster record at %s" % CLUSTER_KEY)
        try:
            url = json.loads(entry.value).get("join_endpoint")
        except (ValueError, AttributeError):
            url = None
        if not url:
            raise NoJoinEndpoint(why="the cluster record has no join_endpoint")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise BadTokenOption(option="join endpoint", value=url,
                             why="it must be an https:// URL (the CA pin checks its TLS)")
    return url


def bundle(endpoint, token, ca_pin):
    """What a joining node needs: ``{endpoint, token, ca_sha256}``."""
    return {"endpoint": endpoint, "token": token, "ca_sha256": ca_pin}
