"""Join tokens on the in-memory store: format, hashing, expiry, use limits, refusals."""

import json
import threading

import pytest
from fakeclock import Clock

from rackforge import registry
from rackforge.cluster import tokens
from rackforge.cluster.tokens import TokenStore


@pytest.fixture
def clock():
    return Clock(1_700_000_000.0)


@pytest.fixture
def store(clock):
    return TokenStore(registry.MemoryRegistry().kv, clock=clock)


def snapshot(store):
    return [(e.key, e.value, e.mod_revision) for e in store.kv.get_prefix("/")]


def test_format_and_storage_never_holds_the_secret(store, clock):
    token, record = store.create(description="rack 1  batch")
    assert tokens.TOKEN_RE.match(token)
    token_id, secret = token.split(".")
    assert record.id == token_id and record.description == "rack 1 batch"
    raw = store.kv.get(tokens.PREFIX + token_id).value
    assert secret.encode() not in raw
    data = json.loads(raw)
    assert data["hash"] == tokens.hash_secret(secret)
    assert data["expires"] - data["created"] == tokens.DEFAULT_TTL
    assert data["uses"] == 1                # one node, unless said otherwise


def test_tokens_are_distinct(store):
    assert len({store.create()[0] for _ in range(50)}) == 50


def test_redeem_spends_a_use_and_lists_without_secret(store, clock):
    token, _ = store.create(uses=2)
    rec = store.redeem(token, "r1n2")
    assert rec.used == 1 and rec.used_by == ["r1n2"]
    listed = store.list()[0].public(clock())
    assert listed["state"] == "valid" and listed["used"] == 1
    assert "hash" not in listed and token.split(".")[1] not in json.dumps(listed)


def test_wrong_secret_unknown_and_malformed_are_refused_writing_nothing(store):
    token, _ = store.create()
    before = snapshot(store)
    token_id = token.split(".")[0]
    for bad, error in ((token_id + "." + "a" * 16, tokens.TokenRefused),
                       ("zzzzzz." + "a" * 16, tokens.TokenRefused),
                       ("short.x", tokens.TokenMalformed),
                       (token.upper(), tokens.TokenMalformed),
                       ("", tokens.TokenMalformed)):
        with pytest.raises(error) as e:
            store.redeem(bad, "r1n9")
        assert "\n" not in str(e.value) and "r1n9" in str(e.value)
        assert "rackforge cluster token create" in str(e.value)
    assert snapshot(store) == before


def test_expired_token_is_refused_writing_nothing(store, clock):
    token, _ = store.create(ttl=600)
    clock.now += 599
    store.redeem(token, "early")
    before = snapshot(store)
    clock.now += 1
    with pytest.raises(tokens.TokenExpired, match="node late: it expired at"):
        store.redeem(token, "late")
    with pytest.raises(tokens.TokenExpired):   # even for the node that used it before
        store.redeem(token, "early")
    assert snapshot(store) == before
    assert store.list()[0].public(clock())["state"] == "expired"


def test_use_limit(store, clock):
    token, _ = store.create(uses=2)
    store.redeem(token, "a")
    store.redeem(token, "b")
    before = snapshot(store)
    with pytest.raises(tokens.TokenUsedUp, match="all 2 of its uses are spent"):
        store.redeem(token, "c")
    assert snapshot(store) == before
    assert store.list()[0].state(clock()) == "used up"


def test_same_node_again_does_not_spend_a_second_use(store):
    token, _ = store.create(uses=1)
    store.redeem(token, "r1n2")
    before = snapshot(store)
    assert store.redeem(token, "r1n2").used == 1     # the interrupted join, retried
    assert snapshot(store) == before
    with pytest.raises(tokens.TokenUsedUp):
        store.redeem(token, "r1n3")


def test_a_token_admits_one_node_by_default(store):
    token, _ = store.create()
    store.redeem(token, "n0")
    with pytest.raises(tokens.TokenUsedUp):
        store.redeem(token, "n1")
    assert store.list()[0].used == 1
    with pytest.raises(tokens.BadTokenOption, match="from 1 to 1000"):
        store.create(uses=None)


@pytest.mark.parametrize("variant", ["{t}\n", " {t}", "{t} ", "{T}", "{t}\x00"])
def test_a_token_is_compared_exactly(store, variant):
    token, _ = store.create(uses=5)
    with pytest.raises(tokens.TokenError):
        store.redeem(variant.format(t=token, T=token.upper()), "n1")
    assert store.list()[0].used == 0


@pytest.mark.parametrize("hint", ["n1\n", "n1 ", "N1", "n\u04281"])
def test_names_that_differ_only_by_whitespace_case_or_look_alikes_are_other_names(store, hint):
    """A used-up token is not accepted again for 'n1\\n' (the name check once matched
    before a trailing newline and the redeem path collapsed whitespace)."""
    token, _ = store.create(uses=1)
    store.redeem(token, "n1")
    with pytest.raises(tokens.TokenUsedUp):
        store.redeem(token, hint)
    assert store.list()[0].used_by == ["n1"]


def test_unknown_id_and_wrong_secret_are_refused_alike(store):
    token, _ = store.create()
    token_id = token.split(".")[0]
    with pytest.raises(tokens.TokenRefused) as wrong:
        store.check(token_id + ".0000000000000000", "n1")
    with pytest.raises(tokens.TokenRefused) as unknown:
        store.check("zzzzzz.0000000000000000", "n1")
    assert str(wrong.value).replace(token_id, "ID") == str(unknown.value).replace("zzzzzz",
                                                                                  "ID")


def test_concurrent_redeems_respect_the_limit(store):
    token, _ = store.create(uses=3)
    results, barrier = [], threading.Barrier(10)

    def join(i):
        barrier.wait()
        try:
            store.redeem(token, "n%d" % i)
            results.append("ok")
        except tokens.TokenUsedUp:
            results.append("refused")
    threads = [threading.Thread(target=join, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] * 3 + ["refused"] * 7
    assert store.list()[0].used == 3


def test_delete(store):
    token, rec = store.create()
    store.delete(rec.id)
    assert store.list() == []
    with pytest.raises(tokens.TokenNotFound, match="token list"):
        store.delete(rec.id)
    with pytest.raises(tokens.TokenRefused):
        store.redeem(token, "n1")
    with pytest.raises(tokens.TokenNotFound):
        store.delete("../../nodes")


@pytest.mark.parametrize("text,seconds", [("1h", 3600), ("30m", 1800), ("90", 90),
                                          ("120s", 120), ("1d", 86400), (" 2H ", 7200)])
def test_parse_ttl(text, seconds):
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "1w", "-5m", "59s", "2d", "h"])
def test_parse_ttl_refuses(text):
    with pytest.raises(tokens.BadTokenOption, match="--ttl"):
        tokens.parse_ttl(text)


@pytest.mark.parametrize("uses", [0, -1, "3"])
def test_bad_uses(store, uses):
    with pytest.raises(tokens.BadTokenOption, match="--uses"):
        store.create(uses=uses)


def test_join_endpoints(store):
    with pytest.raises(tokens.NoJoinEndpoint, match="--endpoint"):
        tokens.join_endpoints(store.kv)
    assert tokens.join_endpoints(store.kv, "https://10.0.0.1:9443") == ["https://10.0.0.1:9443"]
    with pytest.raises(tokens.BadTokenOption, match="https"):
        tokens.join_endpoints(store.kv, "http://10.0.0.1:9443")
    store.kv.txn([], [(tokens.CLUSTER_KEY,
                       b'{"join_endpoints": ["https://c1:9443", "https://c2:9443"]}')])
    assert tokens.join_endpoints(store.kv) == ["https://c1:9443", "https://c2:9443"]
