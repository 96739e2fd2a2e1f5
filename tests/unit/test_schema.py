"""One profile file checked on its own: every mistake is one line with the right line number."""

import pytest
import yaml

from rackforge import schema

# Every key of the schema, one per line where it matters; line numbers below refer to this.
GOOD = """\
description: test
distro:
  name: debian
  release: bookworm
elements: [el-a, el-b]
packages: [less, g++]
cluster:
  controllers: 3
roles:
  controller:
    services: [keystone]
network:
  management:
    interface: auto
    mode: dhcp
  bond:
    mode: 802.3ad
  vlan: 100
storage:
  wipe: never
  min_disk_gib: 20
outputs: [qcow2, pxe]
disk:
  esp_mib: 128
  root_free_mib: 0
build:
  min_free_gib: 10
"""

TOP_KEYS = ("build, ceph, cluster, description, disk, distro, elements, extends, network, "
            "openstack, "
            "outputs, packages, roles, storage")


def problems(text):
    return [str(p) for p in schema.parse(text, "bad.yaml").problems]


def edited(old, new):
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def test_good_profile_has_no_problems_and_loads_as_yaml_does():
    doc = schema.parse(GOOD, "good.yaml")
    assert doc.problems == []
    assert doc.data == yaml.safe_load(GOOD)


def test_key_lines_record_every_key_and_item():
    lines = schema.parse("# a comment\n" + GOOD, "good.yaml").lines
    assert lines[""] == 2                       # the document starts after the comment
    assert lines["description"] == 2
    assert lines["elements[1]"] == 6
    assert lines["disk.esp_mib"] == 25
    assert lines["roles.controller.services[0]"] == 12


def test_extends_takes_a_profile_name_not_a_path():
    assert problems("extends: hci\n" + GOOD) == []
    assert problems("extends: ../hci\n" + GOOD) == [
        "bad.yaml:1: extends: '../hci' is not a profile name"]


@pytest.mark.parametrize("old, new, line", [
    # unknown keys, at every level
    ("description: test", "descrption: test",
     "bad.yaml:1: descrption: unknown key; allowed: " + TOP_KEYS),
    ("  controller:", "  database:",
     "bad.yaml:10: roles.database: unknown key; allowed: compute, controller, storage"),
    ("    mode: dhcp", "    mod: dhcp",
     "bad.yaml:15: network.management.mod: unknown key; allowed: interface, mode"),
    ("    services: [keystone]", "    services: [keystone]\n    replicas: 2",
     "bad.yaml:12: roles.controller.replicas: unknown key; allowed: services"),
    # wrong types
    ("  esp_mib: 128", "  esp_mib: big",
     "bad.yaml:24: disk.esp_mib: must be an integer between 64 and 1024, got 'big'"),
    ("  esp_mib: 128", "  esp_mib: '128'",
     "bad.yaml:24: disk.esp_mib: must be an integer between 64 and 1024, got '128'"),
    ("  esp_mib: 128", "  esp_mib: 128.0",
     "bad.yaml:24: disk.esp_mib: must be an integer between 64 and 1024, got 128.0"),
    ("description: test", "description: [a]",
     "bad.yaml:1: description: must be a string, got a list"),
    ("description: test", "description:",
     "bad.yaml:1: description: must be a string, got null"),
    ("    services: [keystone]", "    services: [1]",
     "bad.yaml:11: roles.controller.services[0]: must be a string, got 1"),
    ("elements: [el-a, el-b]", "elements: el-a",
     "bad.yaml:5: elements: must be a list, got 'el-a'"),
    ("cluster:\n  controllers: 3", "cluster: 3",
     "bad.yaml:7: cluster: must be a mapping, got 3"),
    ("disk:\n  esp_mib: 128\n  root_free_mib: 0", "disk:",
     "bad.yaml:23: disk: must be a mapping, got null"),
    # a YAML bool is not an integer
    ("  controllers: 3", "  controllers: true",
     "bad.yaml:8: cluster.controllers: must be an integer between 1 and 7, got true"),
    ("  vlan: 100", "  vlan: yes",
     "bad.yaml:18: network.vlan: must be an integer between 1 and 4094, got yes"),
    # ranges
    ("  esp_mib: 128", "  esp_mib: 32",
     "bad.yaml:24: disk.esp_mib: must be an integer between 64 and 1024, got 32"),
    ("  esp_mib: 128", "  esp_mib: 03000",       # YAML 1.1 octal (1536): read, not a crash
     "bad.yaml:24: disk.esp_mib: must be an integer between 64 and 1024, got 1536"),
    ("  root_free_mib: 0", "  root_free_mib: -1",
     "bad.yaml:25: disk.root_free_mib: must be an integer between 0 and 65536, got -1"),
    # what YAML 1.1 calls an integer but Python cannot read: a line, not a ValueError
    ("  controllers: 3", "  controllers: 0b_",
     "bad.yaml:8: cluster.controllers: must be an integer between 1 and 7, got 0b_"),
    ("  esp_mib: 128", "  esp_mib: " + "9" * 5000,
     "bad.yaml:24: disk.esp_mib: must be an integer between 64 and 1024, got 999999999999999"
     "999999999999999999999999999999999999999999..."),
    # a date is a string here, and so not an integer
    ("  min_free_gib: 10", "  min_free_gib: 2024-13-45",
     "bad.yaml:27: build.min_free_gib: must be an integer between 1 and 1000, got "
     "'2024-13-45'"),
    ("description: test", "description: 0b_",
     "bad.yaml:1: description: must be a string, got 0b_"),
    ("  vlan: 100", "  vlan: 4095",
     "bad.yaml:18: network.vlan: must be an integer between 1 and 4094, got 4095"),
    ("  min_disk_gib: 20", "  min_disk_gib: 0",
     "bad.yaml:21: storage.min_disk_gib: must be an integer >= 1, got 0"),
    ("  min_free_gib: 10", "  min_free_gib: 1001",
     "bad.yaml:27: build.min_free_gib: must be an integer between 1 and 1000, got 1001"),
    ("  controllers: 3", "  controllers: 9",
     "bad.yaml:8: cluster.controllers: must be an integer between 1 and 7, got 9"),
    ("  controllers: 3", "  controllers: 2",
     "bad.yaml:8: cluster.controllers: must be odd (a quorum needs a majority), got 2"),
    # enums
    ("  name: debian", "  name: ubuntu",
     "bad.yaml:3: distro.name: must be one of debian, got 'ubuntu'"),
    ("  release: bookworm", "  release: buster",
     "bad.yaml:4: distro.release: must be one of bookworm, trixie, got 'buster'"),
    ("    mode: dhcp", "    mode: 1",
     "bad.yaml:15: network.management.mode: must be one of dhcp, static, got 1"),
    ("    mode: 802.3ad", "    mode: lacp",
     "bad.yaml:17: network.bond.mode: must be one of active-backup, 802.3ad, balance-alb, "
     "got 'lacp'"),
    ("  wipe: never", "  wipe: always",
     "bad.yaml:20: storage.wipe: must be one of never, force, got 'always'"),
    # lists
    ("outputs: [qcow2, pxe]", "outputs: [qcow2, vmdk]",
     "bad.yaml:22: outputs[1]: must be one of qcow2, raw, iso, pxe, got 'vmdk'"),
    ("outputs: [qcow2, pxe]", "outputs: []", "bad.yaml:22: outputs: must not be empty"),
    ("outputs: [qcow2, pxe]", "outputs: [qcow2, qcow2]",
     "bad.yaml:22: outputs[1]: 'qcow2' is listed twice"),
    ("elements: [el-a, el-b]", "elements: [el-a, el-a]",
     "bad.yaml:5: elements[1]: 'el-a' is listed twice"),
    ("elements: [el-a, el-b]", "elements: [el-a, ../el-b]",
     "bad.yaml:5: elements[1]: '../el-b' is not an element name"),
    ("packages: [less, g++]", "packages: [less, Vim_Tiny]",
     "bad.yaml:6: packages[1]: 'Vim_Tiny' is not a Debian package name"),
    ("packages: [less, g++]", "packages: [l]",            # at least two characters
     "bad.yaml:6: packages[0]: 'l' is not a Debian package name"),
    # the add/remove form
    ("elements: [el-a, el-b]", "elements: {add: [el-c], drop: [el-a]}",
     "bad.yaml:5: elements.drop: unknown key; allowed: add, remove"),
    ("packages: [less, g++]", "packages: {remove: [Less]}",
     "bad.yaml:6: packages.remove[0]: 'Less' is not a Debian package name"),
    ("elements: [el-a, el-b]", "elements: {add: el-c}",
     "bad.yaml:5: elements.add: must be a list, got 'el-c'"),
    # mapping keys
    ("build:\n  min_free_gib: 10", "build:\n  min_free_gib: 10\nbuild: {}",
     "bad.yaml:28: build: given twice"),
    ("build:\n  min_free_gib: 10", "? [a]\n: b",
     "bad.yaml:26: keys must be plain names, got a list"),
    # a tag PyYAML's safe loader does not know, where the schema is otherwise happy
    ("cluster:\n", "cluster: !quorum\n",
     "bad.yaml:7: cluster: YAML: could not determine a constructor for the tag '!quorum'"),
])
def test_each_mistake_is_exactly_one_line(old, new, line):
    assert problems(edited(old, new)) == [line]


def test_a_date_is_read_as_the_string_it_is():
    doc = schema.parse(edited("description: test", "description: 2024-13-45"), "d.yaml")
    assert doc.problems == [] and doc.data["description"] == "2024-13-45"


def test_an_alias_bomb_is_one_line_and_cheap():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        "%s: &%s [%s]\n" % (chr(98 + i), chr(98 + i), ", ".join(["*" + chr(97 + i)] * 10))
        for i in range(8))
    assert problems(bomb) == ["bad.yaml:4: more than 10000 values (aliases expanded)"]


def test_line_numbers_count_leading_comments():
    text = "# a comment\n# another\n" + edited("  esp_mib: 128", "  esp_mib: 8")
    assert problems(text) == [
        "bad.yaml:26: disk.esp_mib: must be an integer between 64 and 1024, got 8"]


def test_all_problems_are_reported_in_file_order():
    text = (GOOD.replace("  controllers: 3", "  controllers: 4")
            .replace("description: test", "description: [1]")
            .replace("outputs: [qcow2, pxe]", "outputs: [qcow2, tar]")
            .replace("  controller:", "  database:"))
    assert problems(text) == [
        "bad.yaml:1: description: must be a string, got a list",
        "bad.yaml:8: cluster.controllers: must be odd (a quorum needs a majority), got 4",
        "bad.yaml:10: roles.database: unknown key; allowed: compute, controller, storage",
        "bad.yaml:22: outputs[1]: must be one of qcow2, raw, iso, pxe, got 'tar'",
    ]


@pytest.mark.parametrize("text, line", [
    ("distro:\n  name: debian\n release: x\n",
     "bad.yaml:3: YAML syntax: while parsing a block mapping, expected <block end>, "
     "but found '<block mapping start>'"),
    ("a:\n\tb: 1\n",
     "bad.yaml:2: YAML syntax: while scanning for the next token, "
     "found character '\\t' that cannot start any token"),
    ("a: 1\n---\nb: 2\n",
     "bad.yaml:2: YAML syntax: expected a single document in the stream, "
     "but found another document"),
])
def test_yaml_syntax_error_is_one_line_with_its_line(text, line):
    assert problems(text) == [line]


@pytest.mark.parametrize("text, line", [
    ("- a\n- b\n", "bad.yaml:1: the top level must be a mapping of profile keys, got a list"),
    ("\n\nhci\n", "bad.yaml:3: the top level must be a mapping of profile keys, got 'hci'"),
    ("", "bad.yaml:1: the file is empty; a profile is a mapping"),
    ("# nothing but a comment\n", "bad.yaml:1: the file is empty; a profile is a mapping"),
])
def test_top_level_must_be_a_mapping(text, line):
    doc = schema.parse(text, "bad.yaml")
    assert [str(p) for p in doc.problems] == [line]
    assert doc.data is None


def test_read_reports_a_file_that_is_not_utf8_as_one_line_with_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"# caf\xc3\xa9\ndescription: caf\xe9\n")
    (line,) = [str(p) for p in schema.read(path).problems]
    assert line == "%s:2: not UTF-8 text (byte 25 of the file)" % path


def test_read_reports_an_unreadable_file_as_one_line(tmp_path):
    (line,) = [str(p) for p in schema.read(tmp_path).problems]
    assert line == "%s: cannot read: not a regular file" % tmp_path


def test_read_gives_the_same_result_as_parse(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert schema.read(path) == schema.parse(GOOD, path)


def test_paths_under_the_current_directory_are_shown_relative(tmp_path, monkeypatch):
    (tmp_path / "profiles").mkdir()
    monkeypatch.chdir(tmp_path)
    problem = schema.Problem(tmp_path / "profiles" / "x.yaml", 7, "disk.esp_mib", "bad")
    assert str(problem) == "profiles/x.yaml:7: disk.esp_mib: bad"
    assert str(schema.Problem("/elsewhere/x.yaml", 0, "", "bad")) == "/elsewhere/x.yaml: bad"
