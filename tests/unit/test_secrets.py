"""The secret store: sealed per reader, never in clear in the store, granted without re-sealing."""

import json

import pytest

from rackforge import keys
from rackforge.cluster import ca, secrets
from rackforge.kvstore import MemoryKV

VALUE = b"galera-root-password-0123456789"


def node_key(kind="ec"):
    return ca.load_key(ca.new_key_pem(kind))


@pytest.fixture
def kv():
    return MemoryKV()


def test_a_reader_opens_it_and_the_store_never_holds_the_value(kv):
    a, b = node_key(), node_key("rsa")
    store = secrets.SecretStore(kv, "node-a", a)
    assert store.put("db/root", VALUE, {"node-a": a.public_key(), "node-b": b.public_key()})
    assert store.get("db/root") == VALUE
    assert secrets.SecretStore(kv, "node-b", b).get("db/root") == VALUE
    raw = b"".join(e.value for e in kv.get_prefix("/"))
    assert VALUE not in raw and b"galera" not in raw
    assert sorted(store.readers("db/root")) == ["node-a", "node-b"]


def test_a_node_not_named_cannot_read_even_with_a_copy_of_the_record(kv):
    a, c = node_key(), node_key()
    secrets.SecretStore(kv, "node-a", a).put("cookie", VALUE, {"node-a": a.public_key()})
    with pytest.raises(secrets.NotAReader, match="not sealed for node node-c"):
        secrets.SecretStore(kv, "node-c", c).get("cookie")
    # node c forges itself into the readers with a's sealed key: its key cannot open it
    record = json.loads(kv.get(keys.SECRETS + "cookie").value)
    record["readers"]["node-c"] = record["readers"]["node-a"]
    with pytest.raises(secrets.SecretError, match="does not open it"):
        secrets.open_record(record, "node-c", c)


def test_grant_rewraps_the_same_value_for_a_new_reader(kv):
    a, b = node_key(), node_key()
    store = secrets.SecretStore(kv, "node-a", a)
    store.put("ca-key", VALUE, {"node-a": a.public_key()})
    before = json.loads(kv.get(keys.SECRETS + "ca-key").value)
    assert store.grant("ca-key", {"node-b": b.public_key()}) is True
    after = json.loads(kv.get(keys.SECRETS + "ca-key").value)
    assert after["ciphertext"] == before["ciphertext"]          # not re-encrypted
    assert secrets.SecretStore(kv, "node-b", b).get("ca-key") == VALUE
    assert store.grant("ca-key", {"node-b": b.public_key()}) is False   # already a reader


def test_a_non_reader_cannot_grant(kv):
    a, b = node_key(), node_key()
    secrets.SecretStore(kv, "node-a", a).put("k", VALUE, {"node-a": a.public_key()})
    with pytest.raises(secrets.NotAReader):
        secrets.SecretStore(kv, "node-b", b).grant("k", {"node-b": b.public_key()})


def test_generate_once_keeps_the_first_value(kv):
    a = node_key()
    store = secrets.SecretStore(kv, "node-a", a)
    assert store.put("k", b"first", {"node-a": a.public_key()}, only_if_absent=True)
    assert not store.put("k", b"second", {"node-a": a.public_key()}, only_if_absent=True)
    assert store.get("k") == b"first"
    store.put("k", b"rotated", {"node-a": a.public_key()})
    assert store.get("k") == b"rotated"
    assert json.loads(kv.get(keys.SECRETS + "k").value)["version"] == 2


def test_a_damaged_value_is_one_line_not_garbage(kv):
    a = node_key()
    store = secrets.SecretStore(kv, "node-a", a)
    store.put("k", VALUE, {"node-a": a.public_key()})
    record = json.loads(kv.get(keys.SECRETS + "k").value)
    record["ciphertext"] = record["ciphertext"][:-8] + "AAAAAAA="
    with pytest.raises(secrets.SecretError, match="damaged"):
        secrets.open_record(record, "node-a", a)
    with pytest.raises(secrets.SecretNotFound):
        store.get("missing")
