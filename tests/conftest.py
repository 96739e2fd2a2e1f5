"""Fixtures for the integration and end-to-end tests: one real build of ``minimal`` per session.

The build goes to a session temporary directory (never the developer's
``images/``); the base cache is the normal one, so a second test run reuses
the base the way an operator's rebuild does.
"""

import os
from pathlib import Path

import pytest
from harness import rackforge

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 45 * 60


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("integration tests build images: run them as root (make test does)")


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def build_env(images_dir):
    return dict(os.environ, RACKFORGE_IMAGES=str(images_dir))


@pytest.fixture(scope="session")
def minimal_build(images_dir, build_env):
    """images/minimal/ of a real build, and the command's output.

    ``RACKFORGE_TEST_PREBUILT=DIR`` uses ``DIR/minimal`` of an earlier build
    from this tree instead (a developer iterating on one test; CI never sets it).
    """
    needs_root()
    prebuilt = os.environ.get("RACKFORGE_TEST_PREBUILT")
    if prebuilt:
        out = Path(prebuilt) / "minimal"
        if not (out / "manifest.json").is_file():
            pytest.fail("RACKFORGE_TEST_PREBUILT=%s has no minimal/manifest.json" % prebuilt)
        return out, (out / "build.log").read_text()
    res = rackforge("build", "minimal", env=build_env, timeout=BUILD_TIMEOUT)
    out = images_dir / "minimal"
    if res.returncode != 0:
        log = images_dir / "minimal.failed.log"
        tail = log.read_text().splitlines()[-40:] if log.exists() else []
        pytest.fail("build failed (%d): %s\n%s" % (res.returncode, res.stderr.strip(),
                                                   "\n".join(tail)))
    return out, res.stdout + res.stderr


@pytest.fixture(scope="session")
def image_root(minimal_build, tmp_path_factory):
    """The built minimal image's root file system, unpacked once (read it, never write)."""
    from nspawn import unpack

    out, _ = minimal_build
    return unpack(out / "pxe" / "rootfs.squashfs", tmp_path_factory.mktemp("rootfs"))
