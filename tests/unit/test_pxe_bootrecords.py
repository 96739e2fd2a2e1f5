"""What a network boot may leave in the registry and in dnsmasq's hosts directory."""

import json

import pytest

from rackforge import registry
from rackforge.pxe.bootrecords import BadBoot, BootRecorder, KnownHosts, check_boot
from rackforge.pxe.limits import LogLimiter, RateLimiter


@pytest.mark.parametrize("mac, platform, expected", [
    ("52-54-00-AA-00-01", "efi", ("52:54:00:aa:00:01", "efi")),
    ("525400aa0001", "", ("52:54:00:aa:00:01", None)),
    ("52:54:00:aa:00:01", "pcbios", ("52:54:00:aa:00:01", "pcbios")),
    ("52:54:00:aa:00:01", "a" * 32, ("52:54:00:aa:00:01", "a" * 32))])
def test_good_boots(mac, platform, expected):
    assert check_boot(mac, platform) == expected


@pytest.mark.parametrize("mac, platform", [
    ("ff:ff:ff:ff:ff:ff", "efi"), ("01:00:5e:00:00:01", "efi"), ("00:00:00:00:00:00", "efi"),
    ("52:54:00:aa:00:01\n", "efi"), (" 52:54:00:aa:00:01", "efi"), ("x" * 65536, "efi"),
    ("52:54:00:aa:00:01", "a" * 33), ("52:54:00:aa:00:01", "x" * 65536),
    ("52:54:00:aa:00:01", "EFI"), ("52:54:00:aa:00:01", "efi\n"), ("52:54:00:aa:00:01", "e f"),
    (None, "efi"), ("525400aa0001 ", "efi"), ("\t525400aa0001", "efi")])
def test_garbage_is_refused(mac, platform):
    with pytest.raises(BadBoot) as e:
        check_boot(mac, platform)
    assert len(str(e.value)) < 80


@pytest.mark.parametrize("fields", [
    {"platform": "x" * 65536}, {"platform": "EFI"}, {"decision": "pwn"}, {"node": "A B"},
    {"node": "x" * 64}])
def test_registry_refuses_a_boot_record_out_of_bounds(fields):
    reg = registry.MemoryRegistry()
    with pytest.raises(registry.InvalidNode):
        reg.record_boot("52:54:00:00:00:01", **fields)
    assert reg.list_boots() == []


def test_a_record_is_small():
    reg = registry.MemoryRegistry()
    rec = reg.record_boot("52:54:00:00:00:01", decision="discover", platform="p" * 32,
                          node="n" * 63)
    assert len(json.dumps(rec)) < 256


def test_unknown_macs_are_bounded_known_ones_are_not():
    reg = registry.MemoryRegistry()
    rec = BootRecorder(reg, max_unknown=3)
    assert rec.load() == []
    macs = ["52:54:00:00:01:%02x" % i for i in range(10)]
    assert [rec.record(m, "discover", "efi") for m in macs] == [True] * 3 + [False] * 7
    assert rec.record(macs[0], "discover", "efi")        # one already recorded: updated
    assert rec.record(macs[9], "install", "efi", node="n9")  # a node's MAC: always
    boots = {b["mac"]: b for b in reg.list_boots()}
    assert set(boots) == set(macs[:3]) | {macs[9]} and boots[macs[0]]["count"] == 2
    again = BootRecorder(reg, max_unknown=3)              # after a restart: the same bound
    again.load()
    assert not again.record(macs[5], "discover", "efi") and again.unknown() == 3


def test_a_failed_write_does_not_take_a_place():
    class Down(registry.NodeRegistry):
        def record_boot(self, mac, **fields):
            raise registry.RegistryUnavailable(endpoint="x", detail="refused")
    rec = BootRecorder(Down(registry.MemoryRegistry().kv), max_unknown=1)
    with pytest.raises(registry.RegistryUnavailable):
        rec.record("52:54:00:00:01:01", "discover", "efi")
    assert rec.unknown() == 0


def test_hosts_directory_is_bounded(tmp_path):
    hosts = KnownHosts(tmp_path, limit=2)
    assert hosts.add("52-54-00-00-00-01") and hosts.add("52:54:00:00:00:01")
    with pytest.raises(BadBoot):
        hosts.add("../../etc/passwd")
    with pytest.raises(BadBoot):
        hosts.add("ff:ff:ff:ff:ff:ff")
    assert hosts.add("52:54:00:00:00:02") and not hosts.add("52:54:00:00:00:03")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["52-54-00-00-00-01",
                                                          "52-54-00-00-00-02"]
    assert (tmp_path / "52-54-00-00-00-01").read_text() == "52:54:00:00:00:01,set:netboot\n"
    assert len(KnownHosts(tmp_path, limit=2)) == 2      # counted again after a restart


def test_rate_limiter_per_client_and_bounded():
    now = [0.0]
    limiter = RateLimiter(burst=2, rate=1.0, max_clients=4, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")
    now[0] = 1.0
    assert limiter.allow("a") and not limiter.allow("a")
    for i in range(100):
        limiter.allow("flood%d" % i)
    assert len(limiter._buckets) <= 4


def test_log_limiter_says_what_it_left_out(caplog):
    import logging
    now = [0.0]
    log = LogLimiter(logging.getLogger("t"), burst=2, interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for i in range(50):
            log.log("bad", logging.WARNING, "bad datagram %d", i)
        now[0] = 1.0
        log.log("bad", logging.WARNING, "bad datagram %d", 50)
    assert [r.getMessage() for r in caplog.records] == [
        "bad datagram 0", "bad datagram 1", "bad datagram 50 (and 48 similar lines left out)"]


def test_reservations_are_written_changed_and_taken_back(tmp_path):
    hosts = KnownHosts(tmp_path)
    assert hosts.add("52:54:00:00:00:01") and hosts.add("52:54:00:00:00:02")
    assert hosts.reserve({"52:54:00:00:00:01": "10.0.0.31"}) is True
    assert (tmp_path / "52-54-00-00-00-01").read_text() == \
        "52:54:00:00:00:01,set:netboot,10.0.0.31\n"
    assert (tmp_path / "52-54-00-00-00-02").read_text() == "52:54:00:00:00:02,set:netboot\n"
    assert hosts.reserve({"52:54:00:00:00:01": "10.0.0.31"}) is False    # nothing to re-read
    assert hosts.add("52:54:00:00:00:01")           # a boot again: the reservation stays
    assert "10.0.0.31" in (tmp_path / "52-54-00-00-00-01").read_text()
    # the address moves to another MAC (a reinstall with another NIC): one holder only
    assert hosts.reserve({"52:54:00:00:00:02": "10.0.0.31"}) is True
    assert (tmp_path / "52-54-00-00-00-01").read_text() == "52:54:00:00:00:01,set:netboot\n"
    assert hosts.reserved() == {"52:54:00:00:00:02": "10.0.0.31"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["52-54-00-00-00-01",
                                                          "52-54-00-00-00-02"]
