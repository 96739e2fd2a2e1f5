"""Join tokens: short-lived, use-limited secrets a node presents to join the cluster.

In the manner of kubeadm's bootstrap tokens a token is ``ID.SECRET``: a
6-character public id and a 16-character secret, both ``[a-z0-9]``.  The
registry keeps only the secret's SHA-256, never the secret::

    keys.TOKENS + <id>   {"id", "hash": "sha256:<hex>", "created", "expires",
                          "uses": N, "used": n, "used_by": [node names], "description",
                          "bound": null | {"node", "name", "macs", "serial"}}
    keys.CLUSTER         {"join_endpoints": [URL, ...], ...}   (the controllers')

A token expires ``ttl`` seconds after it is created (one hour by default,
at most a day) and admits ``uses`` nodes (one by default).
:meth:`TokenStore.plan_redeem` checks the secret (in constant time, an
unknown id costing what a wrong secret costs), the expiry and the limit, and
returns the compare-and-set that spends one use, for the join service to
write in the same transaction as the node it admits; a wrong, expired or
used-up token is refused with one line and nothing is written.  Identities
are compared exactly as given: nothing is stripped, folded or collapsed.

The same node redeeming again (a join interrupted by a power cut: the join
service has proved it by its key) spends nothing, as long as the token has
not expired.

A token may be *bound* to one registered node (``bound``: its id, name, the
MACs its BMC enrolment recorded and its serial): the install API
(``bringup/installapi.py``) gives each installing node such a token, and the
join service admits with it that node only, once its install is done
(:func:`check_binding`); any other identity is refused like a wrong secret.

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
TOKEN_RE = re.compile(r"^([a-z0-9]{%d})\.([a-z0-9]{%d})\Z" % (ID_LEN, SECRET_LEN))
ID_RE = re.compile(r"^[a-z0-9]{%d}\Z" % ID_LEN)
DEFAULT_TTL = 3600
MAX_USES = 1000
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


class TokenBoundElsewhere(TokenError):
    message = ("join token {id} refused for node {node}: it admits one other machine only; "
               "a node installed by 'rackforge rack up' joins with the token its install "
               "was given")


class TokenNotFound(TokenError):
    message = "no join token '{id}'; 'rackforge cluster token list' shows the tokens"


class BadTokenOption(errors.ConfigError):
    message = "{option} '{value}' is not valid: {why}"


class NoJoinEndpoint(errors.ConfigError):
    message = ("no join endpoint known ({why}); pass --endpoint https://SEED:PORT, "
               "or create the cluster on the seed first")


def hash_secret(secret):
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


# compared against when the id is unknown, so that costs what a wrong secret costs
_NO_TOKEN = hash_secret("-" * SECRET_LEN)


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
    """``uses`` if it is a valid use limit (1 to MAX_USES); raises :class:`BadTokenOption`."""
    if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
        raise BadTokenOption(option="--uses", value=uses,
                             why="give a whole number from 1 to %d" % MAX_USES)
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
    uses: int = 1               # None (written by older versions): unlimited
    used: int = 0
    used_by: list = field(default_factory=list)
    description: str = ""
    bound: dict = None          # {"node", "name", "macs", "serial"}: admits that node only

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
                "uses": self.uses, "used": self.used, "used_by": list(self.used_by),
                "bound_to": (self.bound or {}).get("name")}


class TokenStore:
    """Join tokens on a :class:`rackforge.kvstore.KVStore`."""

    def __init__(self, kv, clock=time.time):
        self.kv = kv
        self.clock = clock

    def create(self, ttl=DEFAULT_TTL, uses=1, description="", bound=None):
        """A new token; returns ``(token_text, TokenRecord)``.  The text is shown once.

        :param bound: ``{"node", "name", "macs", "serial"}``: the token admits that
            registered node only (:func:`check_binding`).
        """
        for _ in range(CAS_ATTEMPTS):
            token, record, compares, puts = self.plan_create(ttl, uses, description, bound)
            if self.kv.txn(compares, puts):
                return token, record
        raise TokenError("could not find a free token id; delete old tokens "
                         "with 'rackforge cluster token delete'")

    def plan_create(self, ttl=DEFAULT_TTL, uses=1, description="", bound=None):
        """``(token_text, record, compares, puts)`` creating a token, for a caller that
        writes more in the same transaction (the install API: the new token, its node's
        install record and the previous token's removal in one)."""
        check_uses(uses)
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise BadTokenOption(option="--ttl", value=ttl,
                                 why="a token lives from 1 minute to 24 hours")
        token_id = "".join(secrets.choice(ALPHABET) for _ in range(ID_LEN))
        secret = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LEN))
        now = self.clock()
        record = TokenRecord(id=token_id, hash=hash_secret(secret), created=now,
                             expires=now + ttl, uses=uses,
                             description=" ".join(str(description).split()),
                             bound=dict(bound) if bound else None)
        return ("%s.%s" % (token_id, secret), record, [Compare(PREFIX + token_id, 0)],
                [(PREFIX + token_id, record.to_json())])

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

    def check(self, token, node_hint="(unnamed)"):
        """``(record, entry)`` of a valid ``token``, spending nothing.

        The secret is compared in constant time, and an unknown id costs the same
        comparison as a wrong secret: the two refusals look alike from outside.

        :raises TokenMalformed, TokenRefused, TokenExpired: nothing is written.
        """
        node = node_hint if isinstance(node_hint, str) and node_hint else "(unnamed)"
        m = TOKEN_RE.match(token) if isinstance(token, str) else None
        if m is None:
            raise TokenMalformed(node=node)
        token_id, secret = m.groups()
        offered = hash_secret(secret)
        entry = self.kv.get(PREFIX + token_id)
        record = TokenRecord.from_value(entry.value) if entry is not None else None
        if not hmac.compare_digest(record.hash if record else _NO_TOKEN, offered) \
                or record is None:
            raise TokenRefused(id=token_id, node=node)
        if self.clock() >= record.expires:
            raise TokenExpired(id=token_id, node=node, when=_when(record.expires))
        return record, entry

    def plan_redeem(self, token, node_hint):
        """``(record, compares, puts)`` spending one use of ``token`` for node
        ``node_hint``, for a caller that writes them in a transaction of its own.

        The same node again (an interrupted join) spends nothing: empty lists.
        :raises TokenMalformed, TokenRefused, TokenExpired, TokenUsedUp.
        """
        record, entry = self.check(token, node_hint)
        if node_hint in record.used_by:
            return record, [], []
        if record.uses is not None and record.used >= record.uses:
            raise TokenUsedUp(id=record.id, node=node_hint, uses=record.uses)
        record.used += 1
        record.used_by.append(node_hint)
        key = PREFIX + record.id
        return record, [Compare(key, entry.mod_revision)], [(key, record.to_json())]

    def redeem(self, token, node_hint):
        """Check ``token`` for the node ``node_hint`` and spend one of its uses.

        One compare-and-set transaction on the token's key; on a lost race
        the token is read and checked again.

        :returns: the :class:`TokenRecord` after the redemption.
        :raises TokenMalformed, TokenRefused, TokenExpired, TokenUsedUp:
            nothing is written.
        """
        for _ in range(CAS_ATTEMPTS):
            record, compares, puts = self.plan_redeem(token, node_hint)
            if not puts or self.kv.txn(compares, puts):
                return record
        raise TokenError("join token %s changed under %d attempts to redeem it for node %s; "
                         "try again" % (token.split(".")[0], CAS_ATTEMPTS, node_hint))


def check_binding(record, node_id, name, macs, serial):
    """Refuse a bound token (``record.bound``) for any identity but its node's.

    :param node_id: the registered node the join resolves to (None: a new node)
    :param name: the name the joining node gives
    :param macs: its NICs' MACs (normalised), from its own inventory
    :param serial: its serial number, from its own inventory (None if unknown)
    :raises TokenBoundElsewhere: a bound token and another node, name, NIC set or
        serial; an unbound token passes.
    """
    bound = record.bound
    if not bound:
        return
    same = (node_id is not None and node_id == bound.get("node")
            and name == bound.get("name")
            and bool(bound.get("macs")) and set(bound["macs"]) <= set(macs)
            and (not bound.get("serial") or serial == bound["serial"]))
    if not same:
        raise TokenBoundElsewhere(id=record.id, node=name)


# -- the join bundle -----------------------------------------------------------------
def join_endpoints(kv, explicit=None):
    """The URLs joining nodes try, in order: ``explicit`` (one URL), else every
    controller's join service from the cluster record."""
    urls = [explicit] if explicit else None
    if not urls:
        entry = kv.get(CLUSTER_KEY)
        if entry is None:
            raise NoJoinEndpoint(why="no cluster record at %s" % CLUSTER_KEY)
        try:
            urls = list(json.loads(entry.value).get("join_endpoints") or [])
        except (ValueError, AttributeError, TypeError):
            urls = []
        if not urls:
            raise NoJoinEndpoint(why="the cluster record lists no join endpoint")
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise BadTokenOption(option="join endpoint", value=url,
                                 why="it must be an https:// URL (the CA pin checks its TLS)")
    return urls


def bundle(endpoints, token, ca_pin):
    """What a joining node needs: ``{endpoints, token, ca_sha256}``."""
    return {"endpoints": list(endpoints), "token": token, "ca_sha256": ca_pin}
