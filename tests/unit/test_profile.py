"""Profile loading and validation: good profiles load, each mistake is one line."""

import json
import textwrap

import pytest

from rackforge import errors
from rackforge.profile import ProfileInvalid, list_profiles, load_profile

GOOD = """\
description: test
distro:
  name: debian
  release: bookworm
elements: [el-a, el-b]
packages: [less]
cluster:
  controllers: 3
roles:
  controller:
    services: [keystone]
outputs: [qcow2, pxe]
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    elements = tmp_path / "elements"
    for name in ("el-a", "el-b", "el-c"):
        (elements / name).mkdir(parents=True)
    monkeypatch.setenv("RACKFORGE_PROFILES", str(profiles))
    monkeypatch.setenv("ELEMENTS_PATH", str(elements))
    return profiles


def write(profiles, name, text):
    path = profiles / ("%s.yaml" % name)
    path.write_text(textwrap.dedent(text))
    return path


def problems(profiles, name):
    with pytest.raises(ProfileInvalid) as exc:
        load_profile(name)
    assert exc.value.exit_code == 2
    return exc.value.lines


def test_good_profile_loads_with_defaults(env):
    write(env, "good", GOOD)
    p = load_profile("good")
    assert p.name == "good" and p.chain == ("good",)
    assert p.elements == ("el-a", "el-b") and p.packages == ("less",)
    assert p.outputs == ("qcow2", "pxe")
    assert p.distro.release == "bookworm"
    assert p.disk.esp_mib == 128 and p.build.min_free_gib == 10     # defaults
    assert p.cluster == {"controllers": 3}
    data = json.loads(json.dumps(p.as_dict()))
    assert data["name"] == "good" and data["storage"]["wipe"] == "never"


def test_load_by_path(env, tmp_path):
    path = write(tmp_path, "elsewhere", GOOD)
    assert load_profile(str(path)).name == "elsewhere"


@pytest.mark.parametrize("line_no, old, new, message", [
    (1, "description: test", "descrption: test",
     "descrption: unknown key; allowed: build, cluster, description"),
    (8, "  controllers: 3", "  controllers: 2",
     "cluster.controllers: must be odd (a quorum needs a majority), got 2"),
    (8, "  controllers: 3", "  controllers: true",
     "cluster.controllers: must be an integer between 1 and 7, got true"),
    (8, "  controllers: 3", "  controllers: 'three'",
     "cluster.controllers: must be an integer between 1 and 7, got 'three'"),
    (4, "  release: bookworm", "  release: buster",
     "distro.release: must be one of bookworm, trixie, got 'buster'"),
    (10, "  controller:", "  database:",
     "roles.database: unknown key; allowed: compute, controller, storage"),
    (12, "outputs: [qcow2, pxe]", "outputs: [qcow2, vmdk]",
     "outputs[1]: must be one of qcow2, raw, iso, pxe, got 'vmdk'"),
    (12, "outputs: [qcow2, pxe]", "outputs: []", "outputs: must not be empty"),
    (6, "packages: [less]", "packages: [Less_]",
     "packages[0]: 'Less_' is not a Debian package name"),
    (5, "elements: [el-a, el-b]", "elements: [el-a, el-a]",
     "elements[1]: 'el-a' is listed twice"),
    (5, "elements: [el-a, el-b]", "elements: el-a",
     "elements: must be a list, got 'el-a'"),
])
def test_each_mistake_is_one_line_with_file_and_line(env, line_no, old, new, message):
    path = write(env, "bad", GOOD.replace(old, new))
    lines = problems(env, "bad")
    assert len(lines) == 1, lines
    assert lines[0].startswith("%s:%d: " % (path, line_no)), lines[0]
    assert message in lines[0]


def test_missing_element_names_the_search_path(env):
    path = write(env, "bad", GOOD.replace("el-b]", "el-nope]"))
    (line,) = problems(env, "bad")
    assert line.startswith("%s:5: elements[1]: element 'el-nope' not found in " % path)


def test_all_problems_are_reported(env):
    write(env, "bad", GOOD.replace("controllers: 3", "controllers: 4")
          .replace("[qcow2, pxe]", "[qcow2, tar]").replace("test", "[1]"))
    assert len(problems(env, "bad")) == 3


def test_missing_required_keys(env):
    write(env, "bad", "description: x\n")
    lines = problems(env, "bad")
    assert [line.split(": ")[1] for line in lines] == ["distro", "elements", "outputs"]


def test_yaml_syntax_error_is_one_line(env):
    path = write(env, "bad", "distro:\n  name: debian\n release: x\n")
    (line,) = problems(env, "bad")
    assert line.startswith("%s:3: YAML syntax:" % path)


def test_top_level_must_be_a_mapping(env):
    path = write(env, "bad", "- a\n- b\n")
    (line,) = problems(env, "bad")
    assert line == "%s:1: the top level must be a mapping of profile keys, got a list" % path


def test_unknown_profile(env):
    with pytest.raises(errors.UnknownProfile) as exc:
        load_profile("nope")
    assert "unknown profile 'nope'" in str(exc.value) and exc.value.exit_code == 2


def test_extends_merges_deeply_and_applies_add_remove(env):
    write(env, "parent", GOOD)
    write(env, "child", """\
        extends: parent
        elements: {add: [el-c], remove: [el-a]}
        packages: [vim-tiny]
        cluster:
          controllers: 1
        roles:
          compute:
            services: [nova-compute]
        """)
    p = load_profile("child")
    assert p.chain == ("child", "parent")
    assert p.elements == ("el-b", "el-c")
    assert p.packages == ("vim-tiny",)                         # lists replace
    assert p.cluster == {"controllers": 1}
    assert set(p.roles) == {"controller", "compute"}           # mappings merge
    assert "extends" not in p.as_dict()


def test_child_problem_names_the_child_file(env):
    write(env, "parent", GOOD)
    child = write(env, "child", "extends: parent\ndisk:\n  esp_mib: 8\n")
    (line,) = problems(env, "child")
    assert line == ("%s:3: disk.esp_mib: must be an integer between 64 and 1024, got 8"
                    % child)


def test_extends_cycle_and_missing_parent(env):
    write(env, "a", "extends: b\n")
    write(env, "b", "extends: a\n")
    (line,) = problems(env, "a")
    assert "extends: circular: a -> b -> a" in line
    write(env, "orphan", "extends: ghost\n")
    (line,) = problems(env, "orphan")
    assert "extends: no profile 'ghost'" in line


def test_add_remove_without_parent(env):
    write(env, "bad", GOOD.replace("elements: [el-a, el-b]", "elements: {add: [el-a]}"))
    (line,) = problems(env, "bad")
    assert "elements: add/remove needs a parent profile (extends)" in line


def test_list_profiles(env):
    write(env, "b", GOOD)
    write(env, "a", "description: first\n")
    write(env, "broken", "a: [\n")
    names = list_profiles()
    assert names[0] == ("a", "first") and names[1][0] == "b"
    assert "invalid YAML" in dict(names)["broken"]


def test_shipped_profiles_are_valid(monkeypatch):
    monkeypatch.delenv("RACKFORGE_PROFILES", raising=False)
    monkeypatch.delenv("ELEMENTS_PATH", raising=False)
    pytest.importorskip("diskimage_builder")
    hci, aio, minimal = (load_profile(n) for n in ("hci", "aio", "minimal"))
    assert aio.chain == ("aio", "hci") and aio.cluster == {"controllers": 1}
    assert aio.elements == hci.elements
    assert "rackforge-controlplane" not in minimal.elements
    assert minimal.roles == {}
