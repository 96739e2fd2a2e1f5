import io
from types import SimpleNamespace

from rackforge.images import dib
from rackforge.images.progress import Progress

LOG = """\
2026-11-23 01:55:40.100 | Running hooks from /tmp/dib_build.x/hooks/root.d
2026-11-23 01:55:40.200 | dib-run-parts Running /tmp/dib_build.x/hooks/root.d/75-debian
2026-11-23 01:56:22.000 | Running hooks in /etc/ca-certificates/update.d...
2026-11-23 01:56:34.083 | dib-run-parts Running /tmp/in_target.d/pre-install.d/99-package-uninstalls
2026-11-23 01:56:40.000 | dib-run-parts Running /tmp/in_target.d/install.d/01-package-installs
2026-11-23 01:56:50.000 | dib-run-parts Running /tmp/in_target.d/install.d/60-rackforge-base
"""


def test_phases_from_the_log():
    phases = []
    for line in LOG.splitlines():
        m = dib.PHASE_RE.search(line)
        if m:
            phases.append(m.group(1) or m.group(2))
    assert phases == ["root.d", "pre-install.d", "install.d", "install.d"]


def test_command_lists_packages_and_elements():
    profile = SimpleNamespace(packages=("less", "vim-tiny"), elements=("debian-minimal", "x"))
    assert dib.command(profile, "/w/base") == [
        "disk-image-create", "-t", "tar", "-o", "/w/base", "-p", "less,vim-tiny",
        "debian-minimal", "x"]


def test_failure_line_carries_the_last_lines(tmp_path, monkeypatch):
    """A fake disk-image-create that fails: the error names its last output lines."""
    fake = tmp_path / "bin" / "disk-image-create"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '2026 | Running hooks from /x/hooks/root.d'\n"
                    "echo '2026 | step one'\necho '2026 | it broke'\n"
                    "echo '2026 | Unmount /x/mnt/dev'\n"
                    "echo '2026 | INFO diskimage_builder.block_device [-] State cleaned'\n"
                    "exit 4\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:/usr/bin:/bin" % fake.parent)
    profile = SimpleNamespace(packages=(), elements=("e",), name="t",
                              distro=SimpleNamespace(release="bookworm"))
    out = io.StringIO()
    with open(tmp_path / "build.log", "w") as log:
        try:
            dib.run(profile, tmp_path, "0.1.0", log, Progress(stream=out))
        except Exception as e:  # noqa: BLE001 - checked below
            err = e
    # the housekeeping after the failure is left out of the message
    assert str(err) == ("diskimage-builder failed: exit 4, last lines: "
                        "step one / it broke; full log: %s"
                        % (tmp_path / "build.log"))
    assert "diskimage-builder root.d" in out.getvalue()
    assert "it broke" in (tmp_path / "build.log").read_text()
