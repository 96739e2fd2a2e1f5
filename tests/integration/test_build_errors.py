"""Each build error: one clear line, non-zero exit, nothing left behind.

These run the real ``rackforge build`` command; the diskimage-builder cases
use fixture elements (tests/fixtures/elements) that fail or block early.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import loop_devices_on, mounts_below, rackforge

pytestmark = pytest.mark.integration

FIXTURE_ELEMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "elements"


def one_error_line(res):
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def assert_clean(images):
    assert mounts_below(images) == []
    assert loop_devices_on(images) == []
    leftovers = [p.name for p in images.iterdir() if not p.name.endswith(".failed.log")]
    assert leftovers == []


@pytest.fixture
def scratch(tmp_path):
    """An images dir and a profiles dir of our own."""
    images = tmp_path / "images"
    images.mkdir()
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    env = dict(os.environ, RACKFORGE_IMAGES=str(images), RACKFORGE_PROFILES=str(profiles),
               ELEMENTS_PATH=str(FIXTURE_ELEMENTS))
    return images, profiles, env


def write_profile(profiles, name, elements, extra="", outputs="raw"):
    (profiles / (name + ".yaml")).write_text(
        "description: test profile\n"
        "distro: {name: debian, release: trixie}\n"
        "elements: [%s]\n"
        "outputs: [%s]\n%s" % (", ".join(elements), outputs, extra))


def test_unknown_profile(scratch):
    images, _, env = scratch
    res = rackforge("build", "no-such-profile", env=env)
    assert res.returncode == 2
    line = one_error_line(res)
    assert "unknown profile 'no-such-profile'" in line and "rackforge profile list" in line
    assert_clean(images)


def test_missing_host_tool_names_the_package(scratch, tmp_path):
    images, profiles, env = scratch
    write_profile(profiles, "t", ["debian-minimal"], outputs="pxe")
    # a PATH with every command the build needs except mksquashfs
    from rackforge.images import hosttools
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in hosttools.required_tools(["pxe", "raw", "iso", "qcow2"]):
        found = shutil.which(tool.name)
        if found and tool.name != "mksquashfs":
            (bindir / tool.name).symlink_to(found)
    env["PATH"] = str(bindir)
    res = rackforge("build", "t", env=env)
    assert res.returncode == 1
    line = one_error_line(res)
    assert "missing host tool 'mksquashfs'" in line
    assert "apt-get install squashfs-tools" in line
    assert_clean(images)


def test_too_little_disk_is_refused_before_starting(scratch):
    images, profiles, env = scratch
    write_profile(profiles, "t", ["debian-minimal"], "build: {min_free_gib: 1000}\n")
    res = rackforge("build", "t", env=env)
    assert res.returncode == 1
    line = one_error_line(res)
    assert "not enough free disk in %s" % images in line and "1000.0 GiB needed" in line
    assert_clean(images)


def test_not_root_and_no_sudo(scratch, tmp_path):
    """As an unprivileged user with no sudo rights (nobody)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    images, profiles, env = scratch
    write_profile(profiles, "t", ["rf-test-fail"])
    # install the package where nobody can read it, and run the system Python
    pkg = tmp_path / "pkg"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-compile", "--target", str(pkg), str(Path(__file__).parents[2])],
                   check=True)
    for p in (tmp_path, *tmp_path.parents):
        if p != Path("/"):
            os.chmod(p, os.stat(p).st_mode | 0o005)
    os.chmod(images, 0o777)
    env.update(PYTHONPATH=str(pkg), HOME=str(tmp_path), PATH="/usr/sbin:/usr/bin:/sbin:/bin",
               RACKFORGE_SOURCE=str(Path(__file__).parents[2]))
    res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                          "/usr/bin/python3", "-m", "rackforge", "build", "t"],
                         env=env, capture_output=True, text=True, timeout=60, cwd=pkg)
    assert res.returncode == 1, res.stderr
    line = one_error_line(res)
    assert "building an image needs root" in line and "passwordless sudo" in line
    assert_clean(images)


def test_diskimage_builder_failure(scratch):
    images, profiles, env = scratch
    write_profile(profiles, "t", ["debian-minimal", "rf-test-fail"])
    res = rackforge("build", "t", env=env, timeout=600)
    assert res.returncode == 1
    line = one_error_line(res)
    assert line.startswith("rackforge: error: diskimage-builder failed: exit")
    assert "rf-test-fail: this element fails on purpose" in line
    log = images / "t.failed.log"
    assert "full log: %s" % log in line
    assert "rf-test-fail: this element fails on purpose" in log.read_text()
    assert_clean(images)


def test_interrupted_build(scratch):
    images, profiles, env = scratch
    write_profile(profiles, "t", ["debian-minimal", "rf-test-block"])
    proc = subprocess.Popen([sys.executable, "-m", "rackforge", "build", "t", "--verbose"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        if "rf-test-block: waiting to be interrupted" in line:
            break
        assert time.monotonic() < deadline, "the blocking element never ran"
    else:
        pytest.fail("build ended before the blocking element: %s" % proc.stderr.read())
    os.killpg(proc.pid, signal.SIGINT)   # what Ctrl-C does
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    line = one_error_line(subprocess.CompletedProcess([], 130, rest, err))
    assert "rackforge build interrupted" in line
    # diskimage-builder and its sleep are gone too
    assert "rf-test-block" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                 text=True).stdout
    assert_clean(images)
