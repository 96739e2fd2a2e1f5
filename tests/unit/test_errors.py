from rackforge import errors


def test_messages_are_one_line():
    e = errors.BuildFailed(step="mksquashfs", detail="no space\nleft on device", log="/x.log")
    assert str(e) == "mksquashfs failed: no space left on device; full log: /x.log"


def test_exit_codes():
    assert errors.UnknownProfile(name="x", searched="p").exit_code == 2
    assert errors.Interrupted(what="build").exit_code == 130
    assert errors.HostToolMissing(tool="t", install="i").exit_code == 1


def test_template_bug_does_not_hide_the_error():
    assert "missing host tool" in str(errors.HostToolMissing(tool="t"))
