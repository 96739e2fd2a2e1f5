"""The BMC commands end to end on the fake driver and the in-memory registry."""

import json

import pytest

from rackforge import cli, registry
from rackforge.bmc import cli as bmc_cli, credentials, drivers, errors
from rackforge.bmc.fake import FakeDriver

PASSWORD = "Zebra-Pw-7781"


@pytest.fixture
def env(tmp_path, monkeypatch):
    fake = FakeDriver()
    reg = registry.MemoryRegistry()
    monkeypatch.setattr(drivers, "get_driver", lambda name: fake)
    monkeypatch.setattr(bmc_cli, "_connect_registry", lambda args: reg)
    monkeypatch.setenv(credentials.KEY_ENV, str(tmp_path / "cluster.key"))
    monkeypatch.setenv(credentials.DEFAULT_PASSWORD_ENV, PASSWORD)
    return fake, reg


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    return rc, out, err


def test_there_is_no_password_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["power", "status", "--bmc", "10.0.0.1", "--user", "u", "--password", "x"])


def test_power_on_direct_bmcs(env, capsys):
    fake, _ = env
    rc, out, _ = run(capsys, "power", "on", "--driver", "fake", "--user", "admin",
                     "--bmc", "10.0.0.1", "--bmc", "10.0.0.2:6230")
    assert rc == 0
    assert fake.rack.power == {"10.0.0.1": "on", "10.0.0.2": "on"}
    assert "10.0.0.2:6230" in out and "2 of 2 succeeded" in out


def test_one_failure_is_one_line_and_sets_the_exit_code(env, capsys, caplog):
    fake, _ = env
    fake.rack.passwords["10.0.0.2"] = "other"
    rc, out, err = run(capsys, "power", "status", "--driver", "fake", "--user", "admin",
                       "--bmc", "10.0.0.1", "--bmc", "10.0.0.2", "--json")
    assert rc == 1
    data = json.loads(out)
    assert [r["ok"] for r in data["results"]] == [True, False]
    assert "refused user 'admin'" in data["results"][1]["error"]
    assert data["results"][1]["attempts"] == 1
    assert PASSWORD not in caplog.text


def test_retryable_fault_is_retried(env, capsys, monkeypatch):
    from rackforge.bmc import errors, parallel
    monkeypatch.setattr(parallel, "DEFAULT_BACKOFF", 0)
    fake, _ = env
    fake.rack.faults["10.0.0.1"] = [errors.BMCUnreachable]
    rc, out, _ = run(capsys, "bmc", "boot-device", "pxe", "--uefi", "--driver", "fake",
                     "--user", "admin", "--bmc", "10.0.0.1")
    assert rc == 0 and "(2 attempts)" in out
    assert fake.rack.boot["10.0.0.1"] == {"device": "pxe", "persistent": False, "uefi": True}


def test_enroll_then_act_on_nodes_by_name(env, capsys):
    fake, reg = env
    rc, out, _ = run(capsys, "bmc", "enroll", "10.0.0.7", "10.0.0.8:6230", "--user", "admin",
                     "--driver", "fake")
    assert rc == 0, out
    nodes = {n.name: n for n in reg.list_nodes()}
    assert set(nodes) == {"node-fake0007", "node-fake0008"}
    node = nodes["node-fake0008"]
    assert node.state == "enrolled" and node.bmc["port"] == 6230
    assert node.bmc["password"] != PASSWORD
    assert PASSWORD not in json.dumps(node.bmc)
    key = credentials.load_key(create=False)
    assert credentials.decrypt(node.bmc["password"], key) == PASSWORD
    assert node.macs == ["52:54:00:00:00:08"]

    rc, out, _ = run(capsys, "power", "on", "node-fake0007")
    assert rc == 0 and fake.rack.power == {"10.0.0.7": "on"}
    rc, out, _ = run(capsys, "power", "status", "--all")
    assert rc == 0 and "node-fake0008" in out and "2 of 2" in out

    # enrolling again updates in place
    rc, out, _ = run(capsys, "bmc", "enroll", "10.0.0.7", "--user", "admin", "--driver", "fake")
    assert rc == 0 and "updated node-fake0007" in out
    assert len(reg.list_nodes()) == 2


def test_unknown_node_is_one_line(env, capsys):
    rc, out, err = run(capsys, "power", "status", "ghost")
    assert rc != 0 and err.startswith("rackforge: error: no node 'ghost'")


def test_missing_password_is_one_line(env, capsys, monkeypatch):
    monkeypatch.delenv(credentials.DEFAULT_PASSWORD_ENV)
    rc, out, err = run(capsys, "power", "status", "--bmc", "10.0.0.1", "--user", "a")
    assert rc == 2 and "--password-file" in err and len(err.splitlines()) == 1


def test_empty_password_refused_per_node(env, capsys, tmp_path):
    f = tmp_path / "pw"
    f.write_text("")
    rc, out, err = run(capsys, "power", "status", "--driver", "fake", "--bmc", "10.0.0.1",
                       "--user", "a", "--password-file", str(f))
    assert rc == 1 and "refusing an empty password" in out


def test_parse_address():
    assert bmc_cli.parse_address("10.0.0.1") == ("10.0.0.1", None)
    assert bmc_cli.parse_address("10.0.0.1:6230") == ("10.0.0.1", 6230)
    assert bmc_cli.parse_address("[fe80::1]:623") == ("fe80::1", 623)
    assert bmc_cli.parse_address("fe80::1") == ("fe80::1", None)
    assert bmc_cli.parse_address("bmc-1.rack1.example") == ("bmc-1.rack1.example", None)
    assert bmc_cli.parse_address("https://10.0.0.1:8000/") == ("https://10.0.0.1:8000/", None)


@pytest.mark.parametrize("text", [
    "S3cr3t!", "p@ss word", "10.0.0.300", "1.2.3.4.5", "123", "-pw1", "a..b", "x" * 300,
    "[10.0.0.1]:623", "[fe80::1]x", "https://admin:pw@10.0.0.1", "ftp://10.0.0.1",
    "http://10.0.0.1:99999", "https://10.0.0.1/\x1b[2J", "10.0.0.1\x00",
])
def test_what_is_not_an_address_is_refused_without_repeating_it(text):
    with pytest.raises(errors.BMCConfigError) as e:
        bmc_cli.parse_address(text, "--bmc argument 2")
    assert str(e.value).startswith("--bmc argument 2 is not an address (not shown")
    assert text not in str(e.value)


@pytest.mark.parametrize("text", ["10.0.0.1:0", "10.0.0.1:65536", "host:pw!", "h:\u0661"])
def test_a_bad_port_is_refused_without_repeating_it(text):
    with pytest.raises(errors.BMCConfigError) as e:
        bmc_cli.parse_address(text)
    assert "has a port that is not a number from 1 to 65535" in str(e.value)
    assert text.split(":")[1] not in str(e.value)
