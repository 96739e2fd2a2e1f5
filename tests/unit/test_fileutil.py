"""File helpers: atomic writes reach the disk, directories get their modes whatever the
umask, small inputs are read with a bound, and a failed write leaves nothing behind."""

import errno
import os
import stat

import pytest

from rackforge import cli, errors, fileutil


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_000():
    old = os.umask(0)
    yield
    os.umask(old)


def test_atomic_write_flushes_the_directory_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a, b):
        events.append("rename")
        real_replace(a, b)
    monkeypatch.setattr(fileutil.os, "fsync", fsync)
    monkeypatch.setattr(fileutil.os, "replace", replace)
    fileutil.atomic_write(tmp_path / "f", "data")
    assert events == ["fsync file", "rename", "fsync dir"]
    assert (tmp_path / "f").read_text() == "data"


def test_atomic_write_on_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "f"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fileutil.os, "fsync", full)
    with pytest.raises(OSError):
        fileutil.atomic_write(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_make_dirs_ignores_the_umask(tmp_path, umask_000):
    leaf = fileutil.make_dirs(tmp_path / "state" / "ca", 0o700)
    assert mode(leaf) == 0o700 and mode(tmp_path / "state") == fileutil.PARENT_MODE


def test_make_dirs_leaves_an_existing_directory_alone(tmp_path):
    (tmp_path / "d").mkdir()
    os.chmod(tmp_path / "d", 0o751)
    fileutil.make_dirs(tmp_path / "d", 0o700)
    assert mode(tmp_path / "d") == 0o751


def test_make_dirs_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError):
        fileutil.make_dirs(tmp_path / "f", 0o700)


@pytest.mark.parametrize("where", ["state", "journal", "pki", "banner", "bmc key", "etcd"])
def test_no_state_config_or_key_directory_is_world_writable_under_umask_000(
        tmp_path, monkeypatch, umask_000, where):
    """Under umask 000 the state directory used to be created 0777."""
    state = tmp_path / "state"
    monkeypatch.setenv("RACKFORGE_STATE", str(state))
    monkeypatch.setenv("RACKFORGE_CONFIG", str(tmp_path / "etc"))
    monkeypatch.delenv("RACKFORGE_CLUSTER_KEY_FILE", raising=False)
    if where == "state":
        assert cli.main(["cluster", "ca", "init"]) == 0
    elif where == "journal":
        from rackforge.firstboot import journal
        journal._write(journal.steps_dir() / "01-x.json", {"step": "x"})
    elif where == "pki":
        from rackforge.firstboot import agent
        agent._pki_write("node.key", b"k")
    elif where == "banner":
        from rackforge.firstboot import cli as firstboot_cli
        firstboot_cli.banner("hello")
    elif where == "bmc key":
        from rackforge.bmc import credentials
        credentials.load_key()
    elif where == "etcd":
        from rackforge import kvstore
        kvstore.write_client(["https://127.0.0.1:2379"], {})
    made = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert made
    for path in made:
        assert not mode(path) & 0o022, "%s is %o" % (path, mode(path))
    for secret in ("ca", "pki", "firstboot/steps"):
        if (state / secret).is_dir():
            assert mode(state / secret) == 0o700


def test_ca_init_on_a_full_disk_is_one_line_and_leaves_no_key(tmp_path, monkeypatch, capsys):
    from rackforge.cluster import ca

    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path))
    real = ca.atomic_write

    def write(path, data, mode=0o644):
        if path.name == ca.CERT_FILE:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data, mode=mode)
    monkeypatch.setattr(ca, "atomic_write", write)
    rc = cli.main(["cluster", "ca", "init"])
    _, err = capsys.readouterr()
    assert rc == errors.FileProblem.exit_code and err.count("\n") == 1
    assert "No space left on device" in err and "Traceback" not in err
    assert os.listdir(tmp_path / "ca") == []


def test_ca_init_on_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))

    def read_only(path, mode=0o777):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(fileutil.os, "mkdir", read_only)
    rc = cli.main(["cluster", "ca", "init"])
    _, err = capsys.readouterr()
    assert rc == errors.FileProblem.exit_code and err.count("\n") == 1
    assert err.startswith("rackforge: error: %s" % (tmp_path / "state"))
    assert "Read-only file system" in err and not (tmp_path / "state").exists()


# -- bounded reads ----------------------------------------------------------------------
def test_read_limited_reads_a_small_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert fileutil.read_limited(tmp_path / "f", 3) == b"abc"


def test_read_limited_refuses_a_larger_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abcd")
    with pytest.raises(OSError, match="larger than the 3-byte limit") as e:
        fileutil.read_limited(tmp_path / "f", 3)
    assert e.value.filename == str(tmp_path / "f")


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "directory"])
def test_read_limited_refuses_what_is_not_a_regular_file_without_waiting(tmp_path, special):
    path = tmp_path / "fifo"
    if special == "fifo":
        os.mkfifo(path)         # no writer: a plain open() would wait for ever
    elif special == "directory":
        path.mkdir()
    else:
        path = special
    with pytest.raises(OSError, match="not a regular file"):
        fileutil.read_limited(path, 1024)
