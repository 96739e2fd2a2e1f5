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


def _build(profile, images_dir, build_env):
    """images/PROFILE/ of a real build, or of ``RACKFORGE_TEST_PREBUILT`` (a developer
    iterating on one test; CI never sets it)."""
    needs_root()
    prebuilt = os.environ.get("RACKFORGE_TEST_PREBUILT")
    if prebuilt:
        out = Path(prebuilt) / profile
        if not (out / "manifest.json").is_file():
            pytest.fail("RACKFORGE_TEST_PREBUILT=%s has no %s/manifest.json"
                        % (prebuilt, profile))
        return out, (out / "build.log").read_text()
    res = rackforge("build", profile, env=build_env, timeout=BUILD_TIMEOUT)
    out = images_dir / profile
    if res.returncode != 0:
        log = images_dir / ("%s.failed.log" % profile)
        tail = log.read_text().splitlines()[-40:] if log.exists() else []
        pytest.fail("build failed (%d): %s\n%s" % (res.returncode, res.stderr.strip(),
                                                   "\n".join(tail)))
    return out, res.stdout + res.stderr


@pytest.fixture(scope="session")
def hci_build(images_dir, build_env):
    """images/hci/: the converged rack's image (the node agent's services run on it)."""
    return _build("hci", images_dir, build_env)


@pytest.fixture(scope="session")
def hci_root(request, tmp_path_factory):
    """The hci image's root file system, unpacked once (read it, never write).
    ``$RACKFORGE_TEST_HCI_ROOT``: a root unpacked before (a developer's loop: the
    tests then run whatever code that root holds)."""
    from nspawn import unpack

    given = os.environ.get("RACKFORGE_TEST_HCI_ROOT")
    if given:
        return Path(given)
    out, _ = request.getfixturevalue("hci_build")
    return unpack(out / "pxe" / "rootfs.squashfs", tmp_path_factory.mktemp("hci-root"))


@pytest.fixture(scope="session")
def minimal_build(images_dir, build_env):
    """images/minimal/ of a real build, and the command's output."""
    return _build("minimal", images_dir, build_env)


@pytest.fixture(scope="session")
def image_root(minimal_build, tmp_path_factory):
    """The built minimal image's root file system, unpacked once (read it, never write)."""
    from nspawn import unpack

    out, _ = minimal_build
    return unpack(out / "pxe" / "rootfs.squashfs", tmp_path_factory.mktemp("rootfs"))
