"""Profile loading: extends and merging, elements on the search path, the Profile model.

Every test works on a scratch profiles directory and fake element directories;
only the last one looks at the real profiles/ (and skips when the rackforge
elements they name are not there).
"""

import dataclasses
import json
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml

from rackforge import errors, paths
from rackforge.profile import (DEFAULT_PROFILE, Profile, ProfileInvalid, element_search_path,
                               list_profiles, load_profile)

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
network:
  management:
    interface: eth0
    mode: static
outputs: [qcow2, pxe]
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A scratch source tree: profiles/, ELEMENTS_PATH with el-a..el-d, no diskimage-builder."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    elements = tmp_path / "elements"
    for name in ("el-a", "el-b", "el-c", "el-d"):
        (elements / name).mkdir(parents=True)
    monkeypatch.setenv("RACKFORGE_SOURCE", str(tmp_path / "src"))
    monkeypatch.setenv("RACKFORGE_PROFILES", str(profiles))
    monkeypatch.setenv("ELEMENTS_PATH", str(elements))
    monkeypatch.setitem(sys.modules, "diskimage_builder", None)     # import fails
    return types.SimpleNamespace(root=tmp_path, profiles=profiles, elements=elements)


def write(directory, name, text):
    path = directory / ("%s.yaml" % name)
    path.write_text(textwrap.dedent(text))
    return path


def problems(name):
    with pytest.raises(ProfileInvalid) as exc:
        load_profile(name)
    assert isinstance(exc.value, errors.ConfigError) and exc.value.exit_code == 2
    assert str(exc.value) == "\n".join(exc.value.lines)
    return exc.value.lines


# -- a good profile ----------------------------------------------------------------
def test_good_profile_loads(env):
    path = write(env.profiles, "good", GOOD)
    p = load_profile("good")
    assert (p.name, p.path, p.chain, p.description) == ("good", path, ("good",), "test")
    assert (p.distro.name, p.distro.release) == ("debian", "bookworm")
    assert p.elements == ("el-a", "el-b") and p.packages == ("less",)
    assert p.outputs == ("qcow2", "pxe")
    assert p.cluster == {"controllers": 3}
    assert p.roles == {"controller": {"services": ("keystone",)}}
    assert p.network == {"management": {"interface": "eth0", "mode": "static"}}


def test_defaults_fill_what_the_profile_leaves_out(env):
    write(env.profiles, "bare", "distro: {name: debian, release: trixie}\n"
                                "elements: [el-a]\noutputs: [raw]\n")
    p = load_profile("bare")
    assert p.description == "" and p.packages == () and p.roles == {}
    assert p.cluster == {"controllers": 3}
    assert p.network == {"management": {"interface": "auto", "mode": "dhcp"}}
    assert p.storage == {"wipe": "never", "min_disk_gib": 20}
    assert (p.disk.esp_mib, p.disk.root_free_mib, p.build.min_free_gib) == (128, 512, 10)


def test_defaults_merge_under_a_partial_mapping(env):
    write(env.profiles, "p", GOOD + "disk: {esp_mib: 256}\nstorage: {wipe: force}\n")
    p = load_profile("p")
    assert (p.disk.esp_mib, p.disk.root_free_mib) == (256, 512)
    assert p.storage == {"wipe": "force", "min_disk_gib": 20}


def test_as_dict_is_plain_json_and_yaml_with_defaults(env):
    write(env.profiles, "good", GOOD)
    data = load_profile("good").as_dict()
    assert json.loads(json.dumps(data)) == data
    assert yaml.safe_load(yaml.safe_dump(data)) == data            # `profile show`
    assert data["name"] == "good"
    assert data["elements"] == ["el-a", "el-b"]
    assert data["roles"] == {"controller": {"services": ["keystone"]}}
    assert data["storage"] == {"wipe": "never", "min_disk_gib": 20}
    assert data["disk"] == {"esp_mib": 128, "root_free_mib": 512}
    assert data["build"] == {"min_free_gib": 10}
    assert "extends" not in data


def test_profile_cannot_be_changed(env):
    write(env.profiles, "good", GOOD)
    p = load_profile("good")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "other"
    with pytest.raises(TypeError):
        p.cluster["controllers"] = 5
    with pytest.raises(TypeError):
        p.roles["controller"]["services"] += ("nova-api",)
    p.as_dict()["roles"]["controller"]["services"].append("x")     # a copy
    assert p.roles["controller"]["services"] == ("keystone",)


def test_load_by_path(env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write(elsewhere, "mine", GOOD)
    p = load_profile(str(path))
    assert p.name == "mine" and p.path == path
    assert load_profile(path).name == "mine"                       # a Path works too


def test_unknown_profile(env):
    with pytest.raises(errors.UnknownProfile) as exc:
        load_profile("nope")
    assert str(exc.value) == ("unknown profile 'nope': no nope.yaml in %s; run 'rackforge "
                              "profile list' to see the profiles" % env.profiles)
    assert exc.value.exit_code == 2


def test_missing_profile_file(env):
    with pytest.raises(errors.ConfigError) as exc:
        load_profile(str(env.root / "nope.yaml"))
    assert str(exc.value).startswith("profile file %s does not exist" % (env.root / "nope.yaml"))


# -- problems of the merged profile ------------------------------------------------
def test_missing_element_names_the_search_path(env):
    path = write(env.profiles, "bad", GOOD.replace("el-b]", "el-nope]"))
    assert problems("bad") == [
        "%s:5: elements[1]: element 'el-nope' not found in ELEMENTS_PATH (%s/, %s/)"
        % (path, env.root / "src" / "elements", env.elements)]


def test_missing_elements_are_all_reported_one_line_each(env):
    path = write(env.profiles, "bad", GOOD.replace("elements: [el-a, el-b]",
                                                   "elements:\n  - el-x\n  - el-a\n  - el-y"))
    lines = problems("bad")
    assert [line.split(": ")[:2] for line in lines] == [
        ["%s:6" % path, "elements[0]"], ["%s:8" % path, "elements[2]"]]


def test_required_keys_are_reported_at_the_top_of_the_leaf(env):
    path = write(env.profiles, "bad", "# comment\ndescription: x\n")
    assert problems("bad") == [
        "%s:2: %s: missing; the profile (or one it extends) must set it" % (path, key)
        for key in ("distro", "elements", "outputs")]


def test_distro_needs_name_and_release(env):
    path = write(env.profiles, "bad", GOOD.replace("  release: bookworm\n", ""))
    assert problems("bad") == ["%s:2: distro.release: missing" % path]


def test_problems_are_joined_one_per_line(env):
    write(env.profiles, "bad", GOOD.replace("controllers: 3", "controllers: 4")
          .replace("[qcow2, pxe]", "[qcow2, tar]").replace("description: test", "description: [1]"))
    lines = problems("bad")
    assert len(lines) == 3 and all("\n" not in line for line in lines)


# -- extends -----------------------------------------------------------------------
CHILD = """\
    extends: parent
    description: child
    elements: {add: [el-c], remove: [el-a]}
    packages: [vim-tiny]
    cluster:
      controllers: 1
    roles:
      compute:
        services: [nova-compute]
    network:
      management:
        mode: dhcp
    """


def test_extends_merges_mappings_deeply_and_replaces_the_rest(env):
    write(env.profiles, "parent", GOOD)
    write(env.profiles, "child", CHILD)
    p = load_profile("child")
    assert p.chain == ("child", "parent") and p.name == "child"
    assert p.description == "child"
    assert p.distro.release == "bookworm"                          # inherited
    assert p.elements == ("el-b", "el-c")                          # add/remove
    assert p.packages == ("vim-tiny",)                             # a list replaces
    assert p.cluster == {"controllers": 1}
    assert p.roles == {"controller": {"services": ("keystone",)},  # mappings merge
                       "compute": {"services": ("nova-compute",)}}
    assert p.network == {"management": {"interface": "eth0", "mode": "dhcp"}}
    assert p.outputs == ("qcow2", "pxe")


def test_extends_through_three_levels(env):
    write(env.profiles, "parent", GOOD)
    write(env.profiles, "child", CHILD)
    write(env.profiles, "grandchild", """\
        extends: child
        elements: {add: [el-a, el-d]}
        packages: {add: [tcpdump], remove: [vim-tiny]}
        """)
    p = load_profile("grandchild")
    assert p.chain == ("grandchild", "child", "parent")
    assert p.elements == ("el-b", "el-c", "el-a", "el-d")
    assert p.packages == ("tcpdump",)
    assert p.cluster == {"controllers": 1} and p.description == "child"


def test_add_to_a_list_the_parent_leaves_to_its_default(env):
    write(env.profiles, "parent", GOOD.replace("packages: [less]\n", ""))
    write(env.profiles, "child", "extends: parent\npackages: {add: [less]}\n")
    assert load_profile("child").packages == ("less",)


def test_add_remove_without_a_parent(env):
    path = write(env.profiles, "bad", GOOD.replace("elements: [el-a, el-b]",
                                                   "elements: {add: [el-a]}"))
    assert problems("bad") == [
        "%s:5: elements: add/remove needs a parent profile (extends) that sets elements"
        % path]


def test_add_remove_must_change_something_in_the_parent(env):
    write(env.profiles, "parent", GOOD)
    child = write(env.profiles, "child", """\
        extends: parent
        elements:
          add: [el-b]
          remove: [el-z]
        """)
    assert problems("child") == [
        "%s:4: elements.remove[0]: 'el-z' is not in the parent's elements" % child,
        "%s:3: elements.add[0]: 'el-b' is already in the parent's elements" % child,
    ]


def test_missing_element_points_at_the_file_that_brings_it(env):
    parent = write(env.profiles, "parent", GOOD.replace("el-b]", "el-gone]"))
    child = write(env.profiles, "child", "extends: parent\nelements: {add: [el-new]}\n")
    search = "%s/, %s/" % (env.root / "src" / "elements", env.elements)
    assert problems("child") == [
        "%s:5: elements[1]: element 'el-gone' not found in ELEMENTS_PATH (%s)" % (parent, search),
        "%s:2: elements.add[0]: element 'el-new' not found in ELEMENTS_PATH (%s)"
        % (child, search),
    ]


def test_each_file_of_the_chain_reports_its_own_problems(env):
    parent = write(env.profiles, "parent", GOOD.replace("controllers: 3", "controllers: 2"))
    child = write(env.profiles, "child", "extends: parent\ndisk:\n  esp_mib: 8\n")
    assert problems("child") == [
        "%s:3: disk.esp_mib: must be an integer between 64 and 1024, got 8" % child,
        "%s:8: cluster.controllers: must be odd (a quorum needs a majority), got 2" % parent,
    ]


def test_extends_cycle_is_one_line_naming_the_chain(env):
    write(env.profiles, "a", "extends: b\n")
    write(env.profiles, "b", "description: b\nextends: c\n")
    c = write(env.profiles, "c", "extends: a\n")
    assert problems("a") == ["%s:1: extends: circular: a -> b -> c -> a" % c]
    me = write(env.profiles, "me", "# myself\nextends: me\n")
    assert problems("me") == ["%s:2: extends: circular: me -> me" % me]


def test_extends_a_missing_parent(env):
    orphan = write(env.profiles, "orphan", GOOD + "extends: ghost\n")
    assert problems("orphan") == [
        "%s:17: extends: no profile 'ghost': no ghost.yaml in %s" % (orphan, env.profiles)]


def test_parent_with_a_syntax_error(env):
    parent = write(env.profiles, "parent", "distro: [\n")
    write(env.profiles, "child", "extends: parent\n")
    (line,) = problems("child")
    assert line.startswith("%s:2: YAML syntax: " % parent)


# -- finding things --------------------------------------------------------------
def test_element_search_path_order(env, tmp_path, monkeypatch):
    monkeypatch.setenv("ELEMENTS_PATH", "/one::/two")
    assert element_search_path() == [env.root / "src" / "elements", Path("/one"), Path("/two")]
    fake = types.ModuleType("diskimage_builder")
    fake.__file__ = str(tmp_path / "dib" / "__init__.py")
    monkeypatch.setitem(sys.modules, "diskimage_builder", fake)
    assert element_search_path()[-1] == tmp_path / "dib" / "elements"
    assert element_search_path()[0] == paths.elements_dir()


def test_elements_are_found_in_rackforge_and_diskimage_builder_dirs(env, tmp_path, monkeypatch):
    (env.root / "src" / "elements" / "ours").mkdir(parents=True)
    (tmp_path / "dib" / "elements" / "stock").mkdir(parents=True)
    fake = types.ModuleType("diskimage_builder")
    fake.__file__ = str(tmp_path / "dib" / "__init__.py")
    monkeypatch.setitem(sys.modules, "diskimage_builder", fake)
    write(env.profiles, "p", GOOD.replace("[el-a, el-b]", "[ours, el-a, stock]"))
    assert load_profile("p").elements == ("ours", "el-a", "stock")


def test_a_file_with_an_element_name_is_not_an_element(env):
    (env.elements / "el-file").write_text("")
    write(env.profiles, "p", GOOD.replace("el-b]", "el-file]"))
    (line,) = problems("p")
    assert "element 'el-file' not found" in line


def test_list_profiles(env):
    write(env.profiles, "b", GOOD)
    write(env.profiles, "a", "description: first\n")
    write(env.profiles, "broken", "a: [\n")
    write(env.profiles, "odd", "- a list\n")
    (env.profiles / "notes.txt").write_text("not a profile")
    assert list_profiles() == [
        ("a", "first"),
        ("b", "test"),
        ("broken", "(invalid YAML: run 'rackforge profile validate broken')"),
        ("odd", ""),
    ]


def test_list_profiles_survives_hostile_files(env):
    write(env.profiles, "bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        "%s: &%s [%s]\n" % (chr(98 + i), chr(98 + i), ", ".join(["*" + chr(97 + i)] * 10))
        for i in range(8)))
    write(env.profiles, "date", "description: 2024-13-45\n")
    write(env.profiles, "escape", 'description: "\\e[2Jhi"\n')
    assert list_profiles() == [
        ("bomb", "(invalid YAML: run 'rackforge profile validate bomb')"),
        ("date", "2024-13-45"),
        ("escape", "\\x1b[2Jhi"),
    ]


def test_validate_reports_every_profile_whatever_came_before(env, capsys):
    """`profile validate A B` used to stop at the first missing file."""
    from rackforge import cli

    write(env.profiles, "good", GOOD)
    write(env.profiles, "bad", GOOD.replace("controllers: 3", "controllers: 4"))
    rc = cli.main(["profile", "validate", str(env.root / "nope.yaml"), "nope", "bad", "good",
                   str(env.root)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "good: valid\n"
    lines = err.splitlines()
    assert len(lines) == 4 and all(line.startswith("rackforge: error: ") for line in lines)
    assert "nope.yaml does not exist" in lines[0] and "unknown profile 'nope'" in lines[1]
    assert "cluster.controllers: must be odd" in lines[2]
    assert "%s does not exist or is not a regular file" % env.root in lines[3]


def test_thousands_of_unknown_keys_print_a_capped_number_of_lines(env, capsys):
    from rackforge import cli

    write(env.profiles, "many", GOOD + "".join("k%d: 1\n" % i for i in range(3000)))
    assert cli.main(["profile", "validate", "many"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == errors.MAX_LINES + 1
    assert lines[-1] == "rackforge: error: ... and %d more" % (3000 - errors.MAX_LINES)


def test_a_huge_profile_is_one_line(env, capsys):
    from rackforge import cli

    write(env.profiles, "huge", GOOD + "".join("k%06d: 1\n" % i for i in range(200000)))
    assert cli.main(["profile", "validate", "huge"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "huge.yaml: cannot read: larger than the" in line


def test_a_terminal_escape_in_a_key_is_not_printed(env, capsys):
    from rackforge import cli

    write(env.profiles, "esc", GOOD + '"\\e]0;owned\\a\\e[2J": 1\n')
    assert cli.main(["profile", "validate", "esc"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]0;owned\\x07" in err


def test_shipped_profiles(monkeypatch, tmp_path):
    """The real profiles/ load, with stand-ins for diskimage-builder's stock elements."""
    monkeypatch.delenv("RACKFORGE_PROFILES", raising=False)
    monkeypatch.delenv("RACKFORGE_SOURCE", raising=False)
    hci_elements = yaml.safe_load((paths.profiles_dir() / "hci.yaml").read_text())["elements"]
    ours = [e for e in hci_elements if e.startswith("rackforge-")]
    if not (paths.elements_dir() / "rackforge-base").is_dir() or \
            not all((paths.elements_dir() / e).is_dir() for e in ours):
        pytest.skip("the rackforge-* elements are not all in elements/ yet")
    for stock in set(hci_elements) - set(ours):
        (tmp_path / stock).mkdir()
    monkeypatch.setenv("ELEMENTS_PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "diskimage_builder", None)

    hci, aio, minimal = (load_profile(n) for n in ("hci", "aio", "minimal"))
    assert DEFAULT_PROFILE == "hci" and isinstance(hci, Profile)
    assert [name for name, _ in list_profiles()][:3] == ["aio", "hci", "minimal"]
    assert hci.cluster == {"controllers": 3, "converged": True}
    assert set(hci.roles) == {"controller", "compute", "storage"}
    assert hci.outputs == ("qcow2", "raw", "iso", "pxe")
    assert aio.chain == ("aio", "hci") and aio.cluster == {"controllers": 1, "converged": True}
    assert (aio.elements, aio.roles, aio.outputs) == (hci.elements, hci.roles, hci.outputs)
    assert "rackforge-controlplane" not in minimal.elements and minimal.roles == {}
    assert (minimal.disk.esp_mib, minimal.build.min_free_gib) == (64, 6)
