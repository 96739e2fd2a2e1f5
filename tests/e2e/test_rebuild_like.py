"""A build is reproducible from its manifest: ``rackforge build minimal --like MANIFEST``
rebuilds with every Debian package pinned to the manifest's version and says so."""

import json
import os
import subprocess

import pytest
from harness import rackforge

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_rebuild_from_the_manifest_has_every_package_at_its_version(minimal_build, tmp_path):
    out, _ = minimal_build
    env = dict(os.environ, RACKFORGE_IMAGES=str(tmp_path / "images"))
    res = rackforge("build", "minimal", "--like", out / "manifest.json", env=env,
                    timeout=45 * 60)
    assert res.returncode == 0, res.stderr[-2000:]
    before = json.loads((out / "manifest.json").read_text())
    after = json.loads((tmp_path / "images/minimal/manifest.json").read_text())
    assert "reproduced: all %d packages" % len(before["packages"]) in res.stdout + res.stderr
    assert after["packages"] == before["packages"]
    assert after["pypi"] == before["pypi"]
    # the image carries no pins of its own
    squashfs = tmp_path / "images/minimal/pxe/rootfs.squashfs"
    listing = subprocess.run(["unsquashfs", "-l", str(squashfs)], capture_output=True,
                             text=True, check=True).stdout
    assert "preferences.d/rackforge-pins" not in listing
