"""The installer's answer file: schema, every problem collected, secrets never shown, and
the same model filled section by section as the TUI does."""

import copy

import pytest
import yaml

from rackforge.firstboot import bootstrap
from rackforge.installer import answer, disks
from rackforge.installer.answer import Answers, AnswerInvalid

TOKEN = "q7x2kd.9f3h1m0c8b7v6n5z"
PIN = "sha256:" + "5e" * 32
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILzhpzCzZ1JMKhfAmh+HhKvtei5gpbQHaF0MLitbROET"
           " op@laptop")
ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBP2X65Fxy"
         "C+aV8eos9Tr/F3FXXm5lCzmy/4qQf5mQJ9DeLJ4P1MgL31l7mW+Lf4BH46uLhLXG9cJMRKlr+M8Q7U=")
# an RSA public key's blob (type "ssh-rsa", e 65537, a 1-byte n): enough for the check
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAQE= rsa@host"

SEED = {"version": 1, "hostname": "node1",
        "disk": {"match": {"serial": "S3Z*"}, "wipe": "never"},
        "network": {"interface": "eno1", "address": "10.0.0.11/24", "gateway": "10.0.0.1"},
        "cluster": {"create": {"name": "rack1", "vip": "10.0.0.100"}},
        "ssh_authorized_keys": [ED25519]}
JOIN = dict(copy.deepcopy(SEED), hostname="node2", cluster={"join": {
    "endpoints": ["https://10.0.0.11:9443"], "token": TOKEN, "ca_sha256": PIN}})


def data(base=SEED, **changes):
    out = copy.deepcopy(base)
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = out
        for p in parents:
            node = node[p]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return out


DROP = object()


def problems_of(d):
    with pytest.raises(AnswerInvalid) as e:
        Answers.from_dict(d, where="answer.yaml")
    return e.value


def write(tmp_path, text):
    path = tmp_path / "answer.yaml"
    path.write_text(text)
    return path


# -- the examples ------------------------------------------------------------------------
def test_both_examples_are_shipped_and_valid():
    found = {p.name: answer.load(p) for p in answer.examples()}
    assert set(found) == {"seed.yaml", "join.yaml"}
    assert found["seed.yaml"].mode == "create" and found["join.yaml"].mode == "join"
    assert found["seed.yaml"].cluster.vip == "10.0.0.100"


@pytest.mark.parametrize("path", answer.examples(), ids=lambda p: p.name)
def test_examples_round_trip_and_make_a_bootstrap_firstboot_accepts(path):
    a = answer.load(path)
    assert Answers.from_dict(a.to_dict()) == a
    boot = bootstrap.parse(a.bootstrap())
    assert boot.seed == (a.mode == "create")
    assert boot.management_raw == yaml.safe_load(path.read_text())["network"]


def test_examples_are_package_data():
    import tomllib
    from pathlib import Path
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["rackforge.installer"]
    assert "examples/*.yaml" in globs


# -- the forms -----------------------------------------------------------------------------------
def test_seed_answers():
    a = Answers.from_dict(data())
    assert a.mode == "create" and a.hostname == "node1" and a.ssh_authorized_keys == [ED25519]
    assert a.disk == disks.DiskAnswer([disks.MatchSpec(serial="S3Z*")], "never", listed=False)
    assert a.bootstrap() == {"seed": True, "cluster": "rack1", "vip": "10.0.0.100",
                             "management": SEED["network"]}


def test_join_answers_and_the_token_stays_out_of_repr():
    a = Answers.from_dict(data(JOIN))
    assert a.mode == "join" and a.cluster.token == TOKEN
    assert a.bootstrap()["join"] == {"endpoints": ["https://10.0.0.11:9443"], "token": TOKEN,
                                     "ca_sha256": PIN}
    assert TOKEN not in repr(a)


def test_match_as_an_ordered_list_and_defaults():
    specs = [{"wwn": "naa.5*"}, {"size": "largest", "min_gib": 100}]
    a = Answers.from_dict(data(disk={"match": specs}, ssh_authorized_keys=DROP))
    assert a.disk.listed and a.disk.wipe == "never" and a.ssh_authorized_keys == []
    assert [s.to_dict() for s in a.disk.match] == [{"wwn": "naa.5*"},
                                                   {"min_gib": 100, "size": "largest"}]
    assert a.to_dict()["disk"]["match"][1] == {"min_gib": 100, "size": "largest"}


def test_load_gives_lines(tmp_path):
    path = write(tmp_path, "version: 1\nhostname: node1\ndisk:\n  match: {size: biggest}\n"
                           "network: {interface: eno1, address: dhcp}\n"
                           "cluster: {create: {name: rack1}}\n")
    with pytest.raises(AnswerInvalid) as e:
        answer.load(path)
    assert e.value.lines == ["%s:4: disk.match.size: 'biggest' is not one of largest, smallest;"
                             " write size: largest or size: smallest" % path]


# -- every schema error ---------------------------------------------------------------------------
@pytest.mark.parametrize("changes,key,text", [
    ({"colour": "red"}, "colour", "is not a key of the answer file"),
    ({"disk__match__colour": "red"}, "disk.match.colour", "use only serial, model"),
    ({"cluster__create__size": 3}, "cluster.create.size", "is not a key of cluster.create"),
    ({"hostname": 5}, "hostname", "must be a non-empty string, got 5"),
    ({"hostname": "node_1"}, "hostname", "is not a host name"),
    ({"hostname": "a" * 64}, "hostname", "is not a host name"),
    ({"disk": ["sda"]}, "disk", "must be a mapping, got a list"),
    ({"disk__match": "sda"}, "disk.match", "must be a mapping or a list of mappings"),
    ({"disk__match": []}, "disk.match", "is an empty list"),
    ({"disk__match": {}}, "disk.match", "names no disk"),
    ({"disk__match": DROP}, "disk.match", "is missing"),
    ({"disk__match": {"min_gib": "big"}}, "disk.match.min_gib", "must be a number above 0"),
    ({"disk__match": {"min_gib": True}}, "disk.match.min_gib", "got true"),
    ({"disk__match": {"min_gib": 9, "max_gib": 5}}, "disk.match.min_gib", "larger than max"),
    ({"disk__match": {"size": "biggest"}}, "disk.match.size",
     "'biggest' is not one of largest, smallest"),
    ({"disk__match": [{"serial": "X*"}, {"serial": ""}]}, "disk.match[1].serial",
     "must be a non-empty string"),
    ({"disk__wipe": "always"}, "disk.wipe", "'always' is not one of never, force"),
    ({"network": ["eno1"]}, "network", "must be a mapping"),
    ({"network__address": "10.0.0.11"}, "network.address", "needs a prefix length"),
    ({"network__gateway": "10.9.9.9"}, "network.gateway", "is not another host"),
    ({"cluster": "rack1"}, "cluster", "must be a mapping, got 'rack1'"),
    ({"cluster": {}}, "cluster", "needs 'create: {name, vip}'"),
    ({"cluster__create__name": "Rack_1"}, "cluster.create.name", "is not a cluster name"),
    ({"cluster__create__name": DROP}, "cluster.create.name", "is missing"),
    ({"cluster__create__vip": "10.0.0.300"}, "cluster.create.vip", "is not an IPv4 address"),
    ({"cluster__create__vip": "10.9.0.100"}, "cluster.create.vip",
     "is not a free address of the management network"),
    ({"ssh_authorized_keys": ED25519}, "ssh_authorized_keys", "must be a list"),
    ({"hostname": DROP}, "hostname", "is missing"),
    ({"network": DROP}, "network", "is missing"),
])
def test_each_schema_error_names_its_key(changes, key, text):
    e = problems_of(data(**changes))
    assert [p.key for p in e.problems] == [key], e.lines
    assert text in e.problems[0].text
    assert e.lines == ["answer.yaml: %s: %s" % (key, e.problems[0].text)]


@pytest.mark.parametrize("changes,key,text", [
    ({"cluster__join__endpoints": "https://10.0.0.11:9443"}, "cluster.join.endpoints",
     "must be a list"),
    ({"cluster__join__endpoints": ["http://10.0.0.11:9443"]}, "cluster.join.endpoints[0]",
     "is not an https:// URL"),
    ({"cluster__join__token": "abc"}, "cluster.join.token", "is not a join token"),
    ({"cluster__join__token": DROP}, "cluster.join.token", "is missing"),
    ({"cluster__join__ca_sha256": "sha256:abc"}, "cluster.join.ca_sha256", "is not a CA pin"),
    ({"cluster__join__role": "compute"}, "cluster.join.role", "is not a key of cluster.join"),
])
def test_join_errors(changes, key, text):
    e = problems_of(data(JOIN, **changes))
    assert [(p.key, text in p.text) for p in e.problems] == [(key, True)], e.lines


def test_create_and_join_are_exclusive():
    both = data(cluster={"create": SEED["cluster"]["create"], "join": JOIN["cluster"]["join"]})
    e = problems_of(both)
    assert [p.key for p in e.problems] == ["cluster"] and "both create and join" in e.lines[0]


def test_missing_version_is_reported_with_every_other_problem():
    e = problems_of(data(version=DROP, hostname="-x", disk__wipe="yes"))
    assert [p.key for p in e.problems] == ["version", "hostname", "disk.wipe"]
    assert "add" not in e.problems[0].text and "write 'version: 1'" in e.problems[0].text


def test_another_version_is_reported_alone():
    e = problems_of(data(version=2, hostname="-x", colour="red"))
    assert e.lines == ["answer.yaml: version: 2 is not a version this installer reads (it "
                       "reads 1); write 'version: 1' at the top (the schema is in "
                       "installer/README.md)"]


@pytest.mark.parametrize("version", ["1", 1.0, True, None])
def test_version_must_be_the_number_one(version):
    e = problems_of(data(version=version))
    assert [p.key for p in e.problems] == ["version"] and "whole number" in e.lines[0]


@pytest.mark.parametrize("text,problem", [
    ("", "the file is empty"), ("- a\n- b\n", "the top level must be a mapping, got a list")])
def test_a_file_that_is_not_a_mapping(tmp_path, text, problem):
    with pytest.raises(AnswerInvalid, match=problem):
        answer.load(write(tmp_path, text))


def test_every_problem_is_collected_in_file_order(tmp_path):
    path = write(tmp_path, "version: 1\nhostname: node_1\ncolour: red\n"
                           "disk: {match: {size: big}, wipe: always}\n"
                           "network: {interface: eno1}\n"
                           "cluster: {create: {name: rack1}, join: {}}\n"
                           "ssh_authorized_keys: [nope]\n")
    with pytest.raises(AnswerInvalid) as e:
        answer.load(path)
    got = [line.split(": ")[0:2] for line in e.value.lines]
    assert got == [["%s:2" % path, "hostname"], ["%s:3" % path, "colour"],
                   ["%s:4" % path, "disk.match.size"], ["%s:4" % path, "disk.wipe"],
                   ["%s:5" % path, "network.address"], ["%s:6" % path, "cluster"],
                   ["%s:6" % path, "cluster.join.endpoints"],
                   ["%s:6" % path, "cluster.join.token"],
                   ["%s:6" % path, "cluster.join.ca_sha256"],
                   ["%s:7" % path, "ssh_authorized_keys[0]"]]
    assert str(e.value) == "\n".join(e.value.lines)


def test_yaml_beyond_the_limits_is_one_line(tmp_path):
    with pytest.raises(answer.AnswerUnreadable, match="aliases"):
        answer.load(write(tmp_path, "version: 1\nhostname: &h node1\nx: *h\n"))
    with pytest.raises(answer.AnswerMissing, match="no such answer file"):
        answer.load(tmp_path / "nope.yaml")


# -- ssh keys ----------------------------------------------------------------------------------
def test_valid_ssh_keys():
    a = Answers.from_dict(data(ssh_authorized_keys=[ED25519, ECDSA, RSA]))
    assert a.ssh_authorized_keys == [ED25519, ECDSA, RSA]


@pytest.mark.parametrize("line,text", [
    ("ssh-dss AAAAB3NzaC1kc3M=", "does not start with a key type"),
    ('from="10.0.0.1" ' + ED25519, "does not start with a key type"),
    ("ssh-ed25519", "has no key after ssh-ed25519"),
    ("ssh-ed25519 not*base64", "is not base64"),
    (RSA.replace("ssh-rsa", "ssh-ed25519"), "is not a ssh-ed25519 key"),
    (ED25519 + "\ncommand=\"sh\" " + ED25519, "holds a line break"),
    (5, "must be a public key line, got 5"),
])
def test_bad_ssh_keys_never_quote_the_key(line, text):
    e = problems_of(data(ssh_authorized_keys=[ED25519, line]))
    assert [p.key for p in e.problems] == ["ssh_authorized_keys[1]"]
    assert text in e.lines[0]
    assert not any(part in e.lines[0] for part in str(line).split() if len(part) > 12)


def test_a_key_listed_twice():
    e = problems_of(data(ssh_authorized_keys=[ED25519, ED25519.replace("op@laptop", "x")]))
    assert [p.key for p in e.problems] == ["ssh_authorized_keys[1]"]
    assert "same key" in e.lines[0]


# -- secrets -------------------------------------------------------------------------------------
def test_the_token_never_appears_in_any_error(tmp_path):
    """The join token, right or misplaced, in the file: no error line repeats it."""
    text = yaml.safe_dump(data(
        JOIN, hostname=TOKEN, disk__match={"serial": TOKEN, TOKEN: 1}, disk__wipe=TOKEN,
        network={"interface": TOKEN, "address": "dhcp"}, **{TOKEN: TOKEN},
        cluster__join__endpoints=[TOKEN], cluster__join__ca_sha256=TOKEN,
        cluster__join__extra=TOKEN, ssh_authorized_keys=[TOKEN, "ssh-ed25519 " + TOKEN]))
    with pytest.raises(AnswerInvalid) as e:
        answer.load(write(tmp_path, text))
    assert len(e.value.lines) >= 10
    assert TOKEN not in str(e.value)
    assert all(TOKEN not in p.text and TOKEN not in p.key for p in e.value.problems)


def test_a_join_value_is_never_quoted_even_if_it_is_no_token():
    secret = "hunter2-correct-horse"
    e = problems_of(data(JOIN, cluster__join__token=secret,
                         cluster__join__endpoints=[secret], cluster__join__ca_sha256=secret))
    assert len(e.problems) == 3 and secret not in str(e)


def test_the_files_token_is_scrubbed_wherever_it_is_quoted():
    """A token of the wrong shape is still the operator's secret: copied into another
    field by mistake, it is not repeated there either."""
    secret = "Hunter2_Correct_Horse"
    e = problems_of(data(JOIN, cluster__join__token=secret, hostname=secret,
                         disk__wipe=secret))
    assert [p.key for p in e.problems] == ["hostname", "disk.wipe", "cluster.join.token"]
    assert secret not in str(e) and "'(not shown)' is not a host name" in str(e)


def test_a_token_in_a_yaml_error_is_not_shown(tmp_path):
    path = write(tmp_path, "version: 1\ncluster:\n  join: {token: %s\n" % TOKEN)
    with pytest.raises(answer.AnswerUnreadable) as e:
        answer.load(path)
    assert TOKEN not in str(e.value) and str(path) in str(e.value)


# -- the TUI's way: one section at a time --------------------------------------------------------
def test_filled_section_by_section_equals_the_file():
    a = Answers()
    assert a.missing() == ["hostname", "disk", "network", "cluster"] and a.mode is None
    assert [p.key for p in a.problems()] == ["hostname", "disk", "network", "cluster"]
    assert [p.key for p in a.set("hostname", "node 1")] == ["hostname"]
    assert a.hostname is None                       # a wrong value is not kept
    for name in answer.SECTIONS:
        assert a.set(name, SEED[name]) == []
    assert a.missing() == [] and a.problems() == []
    assert a.check() is a and a == Answers.from_dict(SEED)
    assert a.to_dict() == SEED


def test_one_screen_is_checked_alone():
    assert answer.check_section("disk", {"match": {"serial": "X"}}) == []
    got = answer.check_section("disk", {"match": {"size": "huge"}, "wipe": "maybe"})
    assert [p.key for p in got] == ["disk.match.size", "disk.wipe"]
    parsed, problems = answer.parse_section("cluster", JOIN["cluster"])
    assert problems == [] and parsed.endpoints == ["https://10.0.0.11:9443"]
    assert str(answer.check_section("hostname", "")[0]).startswith("hostname: must be")


def test_the_whole_shows_what_one_screen_cannot():
    """The VIP is checked against the network by firstboot's own bootstrap check."""
    a = Answers()
    for name in answer.SECTIONS:
        a.set(name, SEED[name])
    assert a.set("network", {"interface": "eno1", "address": "192.168.1.5/24"}) == []
    [problem] = a.problems()
    assert problem.key == "cluster.create.vip" and "192.168.1.0/24" in problem.text
    with pytest.raises(AnswerInvalid, match="cluster.create.vip"):
        a.check()


def test_a_tui_disk_pick_round_trips():
    spec = disks.exact_spec(disks_block(wwn="0x5000c500c1a2b3c1"))
    a = Answers()
    assert a.set("disk", {"match": spec.to_dict(), "wipe": "force"}) == []
    assert a.disk.match == [spec] and a.to_dict()["disk"] == {
        "match": {"wwn": "0x5000c500c1a2b3c1"}, "wipe": "force"}


def disks_block(**kw):
    from rackforge.firstboot.inventory import BlockDevice
    return BlockDevice(name="sdb", path="/dev/sdb", size=1 << 40, **kw)
