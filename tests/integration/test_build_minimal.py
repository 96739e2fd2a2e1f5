"""Build ``minimal`` for real and check what landed in images/minimal/."""

import json
import re
import subprocess

import pytest
from harness import loop_devices_on, mounts_below, rackforge

from rackforge import __version__
from rackforge.images import manifest

pytestmark = pytest.mark.integration

NAME = "rackforge-minimal"


def test_every_output_is_there(minimal_build):
    out, _ = minimal_build
    for rel in (NAME + ".qcow2", NAME + ".raw", NAME + ".iso", "pxe/vmlinuz", "pxe/initrd",
                "pxe/rootfs.squashfs", "pxe/boot.ipxe.j2", "manifest.json", "build.log"):
        assert (out / rel).is_file(), rel
        assert (out / rel).stat().st_size > 0, rel


def test_manifest_hashes_match_and_name_the_build(minimal_build):
    out, _ = minimal_build
    assert manifest.verify(out) == []
    data = json.loads((out / "manifest.json").read_text())
    paths = {a["path"] for a in data["artifacts"]}
    assert {NAME + ".qcow2", NAME + ".iso", "pxe/rootfs.squashfs"} <= paths
    assert data["profile"]["name"] == "minimal"
    assert data["rackforge"]["version"] == __version__
    assert re.fullmatch(r"[0-9a-f]{40}", data["rackforge"]["git"]["commit"])
    assert data["diskimage_builder"]
    assert data["build"]["started"] <= data["build"]["finished"]
    pkgs = {p["name"]: p["version"] for p in data["packages"]}
    assert "live-boot" in pkgs and "openssh-server" in pkgs
    assert any(name.startswith("linux-image-") for name in pkgs)
    # Debian 13: the appliance's release
    assert data["profile"]["distro"]["release"] == "trixie"
    assert pkgs["systemd"].startswith("257.") and pkgs["base-files"].startswith("13.")
    # what came from PyPI, each with the hash pip checked it against
    assert [(p["name"], p["version"]) for p in data["pypi"]] == [("tftpy", "0.8.7")]
    assert all(re.fullmatch(r"[0-9a-f]{64}", p["sha256"]) for p in data["pypi"])


def test_verify_command_catches_a_changed_artifact(minimal_build, build_env, tmp_path):
    out, _ = minimal_build
    assert rackforge("verify", "minimal", env=build_env).returncode == 0
    # a copy of the output with one byte changed must fail verification
    copy = tmp_path / "minimal"
    subprocess.run(["cp", "-a", "--reflink=auto", str(out), str(copy)], check=True)
    with open(copy / "pxe" / "boot.ipxe.j2", "ab") as f:
        f.write(b"#")
    assert manifest.verify(copy) == ["pxe/boot.ipxe.j2: size %d, manifest says %d"
                                     % ((copy / "pxe/boot.ipxe.j2").stat().st_size,
                                        (out / "pxe/boot.ipxe.j2").stat().st_size)]


def test_progress_shows_stages_not_raw_log(minimal_build):
    _, output = minimal_build
    assert "[1/8] base root file system (diskimage-builder)" in output
    assert "[8/8] manifest" in output
    # diskimage-builder's own lines only go to build.log without --verbose
    assert "dib-run-parts" not in output


def test_root_tree_has_code_units_and_banner(minimal_build):
    out, _ = minimal_build
    squashfs = out / "pxe" / "rootfs.squashfs"

    def cat(path):
        return subprocess.run(["unsquashfs", "-cat", str(squashfs), path], check=True,
                              capture_output=True, text=True).stdout

    assert cat("etc/issue").startswith("rackforge %s appliance (profile: minimal)" % __version__)
    release = json.loads(cat("etc/rackforge/release.json"))
    assert release["profile"] == "minimal" and release["version"] == __version__
    assert "def main" in cat("usr/lib/rackforge/rackforge/cli.py")
    listing = subprocess.run(["unsquashfs", "-lls", str(squashfs)], check=True,
                             capture_output=True, text=True).stdout

    def enabled(unit):
        return re.search(r"multi-user\.target\.wants/%s -> " % re.escape(unit), listing)

    # first boot runs on every boot until done; it enables the rest itself
    assert enabled("rackforge-firstboot.service")
    for unit in ("rackforge-nodeagent.service", "rackforge-etcd.service",
                 "rackforge-join.service", "etcd.service"):
        assert not enabled(unit), unit
    assert "usr/lib/systemd/system/rackforge-etcd.service" in listing
    # the cluster and storage policy first boot reads
    policy = json.loads(cat("usr/lib/rackforge/profile.json"))
    assert policy["name"] == "minimal" and policy["cluster"]["controllers"] == 3


def test_no_secret_no_build_side_code_and_pinned_units(minimal_build):
    """What Debian's package scripts generate at install time is not in the image; each
    node makes its own at boot.  The image-building rooms are not on the node."""
    out, _ = minimal_build
    squashfs = out / "pxe" / "rootfs.squashfs"
    listing = subprocess.run(["unsquashfs", "-lls", str(squashfs)], check=True,
                             capture_output=True, text=True).stdout
    paths = {line.split()[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]
             for line in listing.splitlines() if line.startswith(("-", "l", "d"))}

    def cat(path):
        return subprocess.run(["unsquashfs", "-cat", str(squashfs), path], check=True,
                              capture_output=True, text=True).stdout

    assert not [p for p in paths if re.search(r"/etc/ssh/ssh_host_\w+_key$", p)]
    assert "squashfs-root/usr/lib/rackforge/rackforge/cluster/join.py" in paths
    for room in ("images", "virt"):
        assert not [p for p in paths if "/usr/lib/rackforge/rackforge/%s/" % room in p], room
    assert cat("etc/machine-id").strip() == "uninitialized"
    preset = cat("usr/lib/systemd/system-preset/10-rackforge.preset").splitlines()
    assert preset[-1] == "disable *"
    assert "enable rackforge-firstboot.service" in preset
    assert "enable systemd-networkd.service" not in preset
    keygen = cat("usr/lib/systemd/system/ssh-keygen.service.d/50-rackforge.conf")
    assert "ExecStart=/usr/bin/ssh-keygen -A" in keygen


def test_nothing_left_behind(minimal_build, images_dir):
    assert not list(images_dir.glob(".build-*"))
    assert mounts_below(images_dir) == []
    assert loop_devices_on(images_dir) == []
