import json
from types import SimpleNamespace

import pytest

from rackforge.images import cache


def profile(**kw):
    base = dict(name="minimal", distro=SimpleNamespace(name="debian", release="bookworm"),
                elements=("debian-minimal", "rackforge-base"), packages=("less",))
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def elements(tmp_path):
    d = tmp_path / "elements"
    (d / "rackforge-base" / "install.d").mkdir(parents=True)
    hook = d / "rackforge-base" / "install.d" / "60-base"
    hook.write_text("#!/bin/bash\necho one\n")
    hook.chmod(0o755)
    return d


def key(element_dir, **kw):
    return cache.base_key(cache.key_inputs(profile(**kw), [element_dir], "3.43.0", "0.1.0"))


def test_key_is_stable(elements):
    assert key(elements) == key(elements)


@pytest.mark.parametrize("change", [
    dict(distro=SimpleNamespace(name="debian", release="trixie")),
    dict(elements=("debian-minimal", "rackforge-base", "rackforge-live")),
    dict(packages=("less", "vim-tiny")),
    dict(name="aio"),
])
def test_key_changes_with_what_makes_the_base(elements, change):
    assert key(elements) != key(elements, **change)


def test_package_order_does_not_matter(elements):
    assert key(elements, packages=("a", "b")) == key(elements, packages=("b", "a"))


def test_key_changes_with_element_content_and_mode(elements):
    before = key(elements)
    hook = elements / "rackforge-base" / "install.d" / "60-base"
    hook.write_text("#!/bin/bash\necho two\n")
    after_content = key(elements)
    hook.chmod(0o644)
    after_mode = key(elements)
    assert len({before, after_content, after_mode}) == 3


def test_key_ignores_python_caches_in_elements(elements):
    before = key(elements)
    (elements / "rackforge-base" / "__pycache__").mkdir()
    (elements / "rackforge-base" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert key(elements) == before


def test_key_changes_with_tool_versions(elements):
    inputs = cache.key_inputs(profile(), [elements], "3.43.0", "0.1.0")
    other_dib = cache.key_inputs(profile(), [elements], "3.44.0", "0.1.0")
    other_rf = cache.key_inputs(profile(), [elements], "3.43.0", "0.2.0")
    assert len({cache.base_key(i) for i in (inputs, other_dib, other_rf)}) == 3


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_store_then_lookup(tmp_path):
    c = cache.BaseCache(tmp_path / "cache")
    tar = tmp_path / "base.tar"
    tar.write_bytes(b"tar")
    stored = c.store("k1", tar, {"x": 1})
    assert c.lookup("k1") == stored and stored.read_bytes() == b"tar"
    assert not tar.exists()  # moved, not copied
    meta = json.loads((stored.parent / "meta.json").read_text())
    assert meta["inputs"] == {"x": 1}
    assert c.lookup("other") is None


def test_expired_base_is_not_used(tmp_path):
    clock = Clock()
    c = cache.BaseCache(tmp_path, max_age_days=7, clock=clock)
    (tmp_path / "t").write_bytes(b"x")
    c.store("k", tmp_path / "t", {})
    clock.now += 6 * 86400
    assert c.lookup("k") is not None
    clock.now += 2 * 86400
    assert c.lookup("k") is None


def test_prune_keeps_the_newest(tmp_path):
    clock = Clock()
    c = cache.BaseCache(tmp_path, keep=2, clock=clock)
    for k in ("a", "b", "c"):
        clock.now += 10
        (tmp_path / k).write_bytes(k.encode())
        c.store(k, tmp_path / k, {})
    assert [key for _, key in c.entries()] == ["c", "b"]


def test_half_written_entry_is_ignored(tmp_path):
    c = cache.BaseCache(tmp_path)
    (c.root / "k").mkdir(parents=True)
    (c.root / "k" / "root.tar").write_bytes(b"partial")  # no meta.json: never finished
    assert c.lookup("k") is None


def test_key_does_not_depend_on_where_the_checkout_is(tmp_path, elements):
    other = tmp_path / "clone" / "elements"
    import shutil
    shutil.copytree(elements, other)
    assert key(elements) == key(other)
