"""Rebuilding from a manifest: the pins written, the manifest checked, the rebuild compared."""

import json
from types import SimpleNamespace

import pytest

from rackforge.images import pins


def profile(name="minimal", release="trixie"):
    return SimpleNamespace(name=name, distro=SimpleNamespace(release=release))


def manifest(tmp_path, name="minimal", release="trixie", packages=None):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({
        "profile": {"name": name, "distro": {"name": "debian", "release": release}},
        "packages": packages if packages is not None else [
            {"name": "systemd", "version": "257.13-1~deb13u1"},
            {"name": "libc6", "version": "2.41-12"}]}))
    return path


def test_load_and_preferences(tmp_path):
    got = pins.load(manifest(tmp_path), profile())
    assert got == {"systemd": "257.13-1~deb13u1", "libc6": "2.41-12"}
    assert pins.preferences(got) == (
        "Package: libc6\nPin: version 2.41-12\nPin-Priority: 1001\n\n"
        "Package: systemd\nPin: version 257.13-1~deb13u1\nPin-Priority: 1001\n")


@pytest.mark.parametrize("kw, prof, why", [
    ({"name": "hci"}, profile(), "a build of profile 'hci', not 'minimal'"),
    ({"release": "bookworm"}, profile(), "it is bookworm, the profile builds trixie"),
    ({"packages": []}, profile(), "lists no packages"),
])
def test_a_manifest_of_something_else_is_one_line(tmp_path, kw, prof, why):
    with pytest.raises(pins.BadManifest) as err:
        pins.load(manifest(tmp_path, **kw), prof)
    assert why in str(err.value) and "\n" not in str(err.value)


def test_missing_or_garbage_manifest(tmp_path):
    with pytest.raises(pins.BadManifest, match="no such file"):
        pins.load(tmp_path / "none.json", profile())
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(pins.BadManifest, match="not a readable manifest"):
        pins.load(bad, profile())
    bad.write_text("[]")
    with pytest.raises(pins.BadManifest, match="not a rackforge manifest"):
        pins.load(bad, profile())


def test_compare_names_every_difference():
    wanted = {"a": "1", "b": "2", "c": "3"}
    assert pins.compare(wanted, dict(wanted)) == []
    assert pins.compare(wanted, {"a": "1", "b": "2.1", "d": "4"}) == [
        "b: 2 in the manifest, 2.1 in the rebuild",
        "c 3: missing from the rebuild",
        "d 4: not in the manifest"]


def test_a_like_plan_adds_the_element_and_keys_the_base_apart(tmp_path, real_profiles):
    from rackforge.images import pipeline

    prof = real_profiles("minimal")
    plain = pipeline.make_plan(prof)
    liked = pipeline.make_plan(prof, like=manifest(tmp_path))
    assert liked.profile.elements[-1] == "rackforge-pins"
    assert "rackforge-pins" not in plain.profile.elements
    assert liked.cache_key != plain.cache_key
    assert any(line.startswith("pinned:    2 packages") for line in liked.describe())
