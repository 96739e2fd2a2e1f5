"""The bootstrap file: seed and join forms, one-line errors, kernel command line."""

import json

import pytest

from rackforge.errors import ConfigError
from rackforge.firstboot import bootstrap

PIN = "sha256:" + "ab" * 32
TOKEN = "abc123.0123456789abcdef"


def write(tmp_path, text):
    p = tmp_path / "bootstrap.yaml"
    p.write_text(text)
    return p


def test_seed_form(tmp_path):
    p = write(tmp_path, "seed: true\ncluster: rack1\n"
                        "management: {interface: eno1, address: 10.0.0.5/24}\n")
    b = bootstrap.load(p, cmdline="")
    assert b.seed and b.mode == "seed" and b.cluster == "rack1" and b.join is None
    assert b.management.interface == "eno1"
    assert b.management_raw == {"interface": "eno1", "address": "10.0.0.5/24"}


def test_join_form_with_role(tmp_path):
    p = write(tmp_path, "join:\n  endpoint: https://10.0.0.5:9443/\n  token: %s\n"
                        "  ca_sha256: %s\nrole: compute\n" % (TOKEN, PIN.upper().replace(
                            "SHA256", "sha256")))
    b = bootstrap.load(p, cmdline="")
    assert b.mode == "join" and b.role == "compute" and b.management is None
    assert b.join == bootstrap.Join(["https://10.0.0.5:9443"], TOKEN, PIN)


def test_join_through_several_endpoints(tmp_path):
    p = write(tmp_path, "join:\n  endpoints: [https://10.0.0.5:9443, 'https://10.0.0.6:9443/']\n"
                        "  token: %s\n  ca_sha256: %s\n" % (TOKEN, PIN))
    assert bootstrap.load(p, cmdline="").join.endpoints == ["https://10.0.0.5:9443",
                                                            "https://10.0.0.6:9443"]


@pytest.mark.parametrize("name", [TOKEN + "\n", " " + TOKEN, TOKEN.upper(),
                                  TOKEN.replace("a", "\u0430", 1)])
def test_a_token_is_taken_exactly_as_written(tmp_path, name):
    """Nothing stripped or folded: a token that differs by whitespace, case or a
    look-alike letter is not a token."""
    p = write(tmp_path, "join: {endpoint: https://a:1, token: %s, ca_sha256: '%s'}\n"
              % (json.dumps(name), PIN))
    with pytest.raises(bootstrap.BootstrapError, match="'join.token' is not a join token"):
        bootstrap.load(p, cmdline="")


def test_env_override_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(tmp_path / "nope.yaml"))
    with pytest.raises(bootstrap.BootstrapMissing) as e:
        bootstrap.load(cmdline="")
    assert "nope.yaml" in str(e.value) and "waiting" in str(e.value)
    assert isinstance(e.value, ConfigError)


@pytest.mark.parametrize("text, field", [
    ("cluster: x\n", "'join' is missing"),
    ("seed: yes-please\ncluster: a\n", "'seed' must be true or false"),
    ("seed: true\n", "'cluster' is missing"),
    ("seed: true\ncluster: Rack_1\n", "'cluster' is not a cluster name"),
    ("seed: true\ncluster: a\nrole: boss\n", "'role' is not a role"),
    ("seed: true\ncluster: a\ncolour: red\n", "'colour' is not a bootstrap key"),
    ("seed: true\ncluster: a\njoin: {}\n", "'join' is set on a seed"),
    ("join: [1]\n", "'join' must be a mapping"),
    ("join: {endpoint: https://a:1, token: %s}\n" % TOKEN, "'join.ca_sha256' is missing"),
    ("join: {endpoint: http://a:1, token: %s, ca_sha256: '%s'}\n" % (TOKEN, PIN),
     "'join.endpoints' holds something that is not an https:// URL"),
    ("join: {endpoint: https://a:1, endpoints: [https://b:1], token: %s, ca_sha256: '%s'}\n"
     % (TOKEN, PIN), "'join.endpoint' is given beside join.endpoints"),
    ("seed: true\ncluster: a\nabcdef.0123456789abcdef: x\n",
     "'(an unknown key)' is not a bootstrap key"),
    ("seed: true\ncluster: a\nrole: abcdef.0123456789abcdef\n", "'role' is not a role"),
    ("seed: true\ncluster: a\nvip: 10.0.1.9\nmanagement: {interface: eno1, "
     "address: 10.0.0.5/24}\n", "'vip' is not a free address of the management network"),
    ("seed: true\ncluster: a\nvip: 300.1.1.1\n", "'vip' is not an IPv4 address"),
    ("join: {endpoint: https://a:1, token: %s, ca_sha256: '%s'}\nvip: 10.0.0.9\n"
     % (TOKEN, PIN), "'vip' is set on a joining node"),
    ("join: {endpoint: https://a:1, token: abc, ca_sha256: '%s'}\n" % PIN,
     "'join.token' is not a join token"),
    ("join: {endpoint: https://a:1, token: %s, ca_sha256: abc}\n" % TOKEN,
     "'join.ca_sha256' is not a CA pin"),
    ("seed: true\ncluster: a\nmanagement: {interface: eno1}\n", "'address' is missing"),
    ("seed: [\n", "bootstrap.yaml:2: YAML syntax: "),
    ("- 1\n", "'(top)' must be a mapping"),
])
def test_errors_are_one_line_naming_the_field(tmp_path, text, field):
    p = write(tmp_path, text)
    with pytest.raises(bootstrap.BootstrapError) as e:
        bootstrap.load(p, cmdline="")
    msg = str(e.value)
    assert field in msg and "\n" not in msg and str(p) in msg
    assert ";" in msg        # what to fix follows
    assert "0123456789abcdef" not in msg     # a misplaced token is never echoed


def test_secret_never_in_error(tmp_path):
    p = write(tmp_path, "join: {endpoint: https://a:1, token: 'abc123.0123456789ABCDEF', "
                        "ca_sha256: '%s'}\n" % PIN)
    with pytest.raises(bootstrap.BootstrapError) as e:
        bootstrap.load(p, cmdline="")
    assert "0123456789" not in str(e.value)


CMDLINE = ("BOOT_IMAGE=/vmlinuz console=ttyS0 rackforge.mode=discover rackforge.seed=10.0.0.5 "
           "rackforge.server=http://10.0.0.5:8080 rackforge.cluster=rack1 rackforge.node=n-7 "
           "rackforge.bogus=1 quiet\n")


def test_from_cmdline_reads_pxe_args():
    from rackforge.pxe import bootscript

    assert bootstrap.from_cmdline(CMDLINE) == {
        "cluster": "rack1",
        "boot": {"mode": "discover", "seed": "10.0.0.5", "server": "http://10.0.0.5:8080",
                 "node": "n-7"}}
    assert bootstrap.from_cmdline("quiet ro") == {}
    assert bootstrap.from_cmdline("rackforge.seed= 'unterminated") == {}
    # what pxe/bootscript.py writes reads back
    decision = type("D", (), {"kind": "install"})()
    args = bootscript.kernel_args(decision, "10.1.1.1", "http://10.1.1.1:80", "c9")
    got = bootstrap.from_cmdline(args)
    assert got["cluster"] == "c9" and got["boot"]["mode"] == "install"
    assert got["boot"]["seed"] == "10.1.1.1"


def test_cmdline_fills_file_and_file_wins(tmp_path):
    p = write(tmp_path, "join: {endpoint: 'https://a:1', token: %s, ca_sha256: '%s'}\n"
                        "boot: {mode: install}\n" % (TOKEN, PIN))
    b = bootstrap.load(p, cmdline=CMDLINE)
    assert b.cluster == "rack1" and b.boot["mode"] == "install"
    assert b.boot["server"] == "http://10.0.0.5:8080"
    # the command line alone is never enough to join (no secret on it)
    with pytest.raises(bootstrap.BootstrapError, match="'join' is missing"):
        bootstrap.parse(bootstrap.from_cmdline(CMDLINE))


# -- wrong shapes, line numbers, nothing echoed ---------------------------------------
SECRET = "0123456789abcdef"


@pytest.mark.parametrize("text, expected", [
    ("seed: true\ncluster: [a]\n", ":2: 'cluster' is not a cluster name"),
    ("seed: true\ncluster: a\nrole: [controller]\n", ":3: 'role' is not a role"),
    ("seed: true\ncluster: a\nrole: {a: 1}\n", ":3: 'role' is not a role"),
    ("seed: [true]\ncluster: a\n", ":1: 'seed' must be true or false"),
    ("seed: true\ncluster: a\nboot: [1]\n", ":3: 'boot' must be a mapping"),
    ("join: {endpoints: [[https://a:1]], token: %s, ca_sha256: '%s'}\n" % (TOKEN, PIN),
     ":1: 'join.endpoints' holds something that is not an https:// URL"),
    ("join:\n  endpoint: https://a:1\n  token: [%s]\n  ca_sha256: '%s'\n" % (TOKEN, PIN),
     ":3: 'join.token' is not a join token"),
    ("seed: true\ncluster: a\nmanagement:\n  interface: eno1\n  address: dhcp\n"
     "  bond: {members: [eno1], mode: [lacp]}\n",
     ":6: management network: 'bond.mode' is not a bonding mode;"),
    ("seed: true\ncluster: a\nmanagement:\n  interface: [eno1]\n  address: dhcp\n",
     ":4: management network: 'interface' is not an interface name;"),
    ("seed: true\ncluster: a\nmanagement: {interface: eno1, address: {a: 1}}\n",
     ":3: management network: 'address' needs a prefix length;"),
    ("seed: true\ncluster: a\nrole: 2024-13-45\n", ":3: 'role' is not a role"),
    ("seed: true\ncluster: a\nrole: 0b_\n", ":3: role: YAML: the value cannot be read as an "
     "integer"),
])
def test_a_wrong_shape_is_one_line_with_its_line(tmp_path, text, expected):
    p = write(tmp_path, text)
    with pytest.raises(bootstrap.BootstrapError) as e:
        bootstrap.load(p, cmdline="")
    msg = str(e.value)
    assert msg.startswith("bootstrap file %s" % p) and expected in msg and "\n" not in msg


@pytest.mark.parametrize("text", [
    "seed: true\ncluster: a\nrole: %s\n" % TOKEN,
    "seed: true\ncluster: a\n%s: 1\n" % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: %s, address: dhcp}\n" % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: eno1, address: %s}\n" % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: eno1, address: '%s/24'}\n" % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: eno1, address: dhcp, %s: 1}\n" % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: eno1, address: dhcp, gateway: %s}\n"
    % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: eno1, address: dhcp, mtu: %s}\n" % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: eno1, address: dhcp, bond: "
    "{members: [eno1], mode: %s}}\n" % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: eno1, address: dhcp, check: "
    "{timeout: %s}}\n" % TOKEN,
    "seed: true\ncluster: a\nmanagement: {interface: eno1, address: dhcp, check: "
    "{peer: %s}}\n" % TOKEN,
    "join: {endpoint: 'https://%s', token: %s, ca_sha256: x}\n" % (TOKEN + "/x", TOKEN),
    "join: {endpoint: https://a:1, %s: 1, token: %s, ca_sha256: '%s'}\n" % (TOKEN, TOKEN, PIN),
    "seed: true\ncluster: a\n%s: !%s 1\n" % (TOKEN, TOKEN),
    "seed: true\ncluster: a\nrole: !!int %s\n" % TOKEN,
    "seed: true\ncluster: &%s a\nrole: *%s\n" % (SECRET, SECRET),
    "seed: true\ncluster: a\nrole: [%s\n" % TOKEN,
    "seed: true\ncluster: a\nrole: \"%s\\q\"\n" % TOKEN,
])
def test_a_misplaced_token_is_never_echoed(tmp_path, text):
    """The error line goes to the world-readable console banner."""
    p = write(tmp_path, text)
    with pytest.raises(bootstrap.BootstrapError) as e:
        bootstrap.load(p, cmdline="")
    assert SECRET not in str(e.value) and "\n" not in str(e.value)
