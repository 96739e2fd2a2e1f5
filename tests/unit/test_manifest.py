import hashlib
import json
import subprocess

import pytest

from rackforge.images import manifest


@pytest.fixture
def out(tmp_path):
    (tmp_path / "pxe").mkdir()
    (tmp_path / "disk.raw").write_bytes(b"\0" * 4096)
    (tmp_path / "pxe" / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "build.log").write_text("log\n")
    return tmp_path


def write(out):
    arts = manifest.collect_artifacts(out, exclude=(manifest.MANIFEST_NAME, "build.log"))
    data = manifest.build_manifest(profile={"name": "t"}, version="0.1.0", git=None,
                                   dib_version="3.43.0", started="2026-01-01T00:00:00+00:00",
                                   finished="2026-01-01T00:05:00+00:00",
                                   base={"key": "k", "cached": False}, artifacts=arts,
                                   packages=[{"name": "bash", "version": "5.2"}])
    return manifest.write_manifest(out, data)


def test_manifest_lists_artifacts_with_size_and_sha256(out):
    data = json.loads(write(out).read_text())
    assert [a["path"] for a in data["artifacts"]] == ["disk.raw", "pxe/vmlinuz"]
    kernel = data["artifacts"][1]
    assert kernel["size"] == 6
    assert kernel["sha256"] == hashlib.sha256(b"kernel").hexdigest()
    assert data["packages"] == [{"name": "bash", "version": "5.2"}]
    assert data["diskimage_builder"] == "3.43.0"


def test_verify_accepts_untouched_output(out):
    write(out)
    assert manifest.verify(out) == []


def test_verify_reports_changed_and_missing_files(out):
    write(out)
    with open(out / "disk.raw", "r+b") as f:
        f.write(b"X")  # same size, other content
    (out / "pxe" / "vmlinuz").unlink()
    assert manifest.verify(out) == ["disk.raw: sha256 differs from the manifest",
                                    "pxe/vmlinuz: missing"]


def test_manifest_write_is_atomic(out, monkeypatch):
    path = write(out)
    before = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        write(out)
    assert path.read_text() == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_git_revision(tmp_path):
    assert manifest.git_revision(tmp_path) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "x"], check=True)
    rev = manifest.git_revision(tmp_path)
    assert len(rev["commit"]) == 40 and rev["dirty"] is False
    (tmp_path / "f").write_text("2")
    assert manifest.git_revision(tmp_path)["dirty"] is True


def test_the_image_pypi_pins_are_versions_and_hashes():
    from rackforge.images import rootfs

    pins = rootfs.pypi_packages()
    assert pins and all(set(p) == {"name", "version", "sha256"} for p in pins)
    assert all(len(p["sha256"]) == 64 for p in pins)


def test_an_unpinned_requirement_is_one_line(tmp_path):
    from rackforge.images import rootfs

    req = tmp_path / "req.txt"
    req.write_text("# comment\nok==1.0 --hash=sha256:%s\ntftpy>=0.8\n" % ("a" * 64))
    with pytest.raises(rootfs.BadPin) as err:
        rootfs.pypi_packages(req)
    assert str(err.value) == ("%s:3: 'tftpy>=0.8' is not 'NAME==VERSION --hash=sha256:HEX'; "
                              "every package an image takes from PyPI is pinned by version "
                              "and hash" % req)
