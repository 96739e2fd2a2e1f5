from rackforge.images import mounts

MOUNTINFO = """\
22 1 8:1 / / rw - ext4 /dev/vda rw
40 22 0:40 / /srv/images/.build-x/dib-tmp/dib_build.1 rw - tmpfs tmpfs rw
41 40 0:5 / /srv/images/.build-x/dib-tmp/dib_build.1/mnt/dev rw - devtmpfs udev rw
42 22 0:41 / /srv/images/.build-xy rw - tmpfs tmpfs rw
43 22 0:42 / /srv/images/.build-x/with\\040space rw - tmpfs tmpfs rw
"""


def test_mounts_under_deepest_first_and_only_below(tmp_path, monkeypatch):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    monkeypatch.setattr(mounts.os.path, "realpath", lambda p: p)
    found = mounts.mounts_under("/srv/images/.build-x", mountinfo=info)
    assert found[0] == "/srv/images/.build-x/dib-tmp/dib_build.1/mnt/dev"
    assert set(found) == {"/srv/images/.build-x/dib-tmp/dib_build.1",
                          "/srv/images/.build-x/dib-tmp/dib_build.1/mnt/dev",
                          "/srv/images/.build-x/with space"}


def test_remove_tree_refuses_while_mounted(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.setattr(mounts, "mounts_under", lambda p: [str(tmp_path / "work" / "m")])
    calls = []
    left = mounts.remove_tree(tmp_path / "work", run=lambda cmd, **kw: calls.append(cmd) or
                              type("R", (), {"returncode": 1})())
    assert left == [str(tmp_path / "work" / "m")]
    assert (tmp_path / "work").exists()
    assert ["umount", "--lazy", str(tmp_path / "work" / "m")] in calls
    assert not any(c[0] == "rm" for c in calls)
