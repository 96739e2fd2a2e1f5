import re
from pathlib import Path

import pytest

from rackforge import errors
from rackforge.images import hosttools

REPO = Path(__file__).resolve().parents[2]


def test_missing_tool_names_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(errors.HostToolMissing) as exc:
        hosttools.check_tools(["raw"])
    assert str(exc.value) == ("missing host tool 'disk-image-create': install it with "
                              "'pip install diskimage-builder' and run again")


def test_outputs_decide_the_tools():
    def names(outputs):
        return {t.name for t in hosttools.required_tools(outputs)}
    assert "mksquashfs" in names(["pxe"]) and "sgdisk" not in names(["pxe"])
    assert "qemu-img" in names(["qcow2"]) and "qemu-img" not in names(["raw"])
    assert "xorriso" in names(["iso"])


def test_setup_script_installs_every_apt_package_the_checks_name():
    script = (REPO / "tools" / "setup-host").read_text()
    listed = set(re.search(r"BUILD_PACKAGES=\(([^)]*)\)", script).group(1).split())
    wanted = {t.install.split()[-1] for tools in hosttools.TOOLS.values() for t in tools
              if t.install.startswith("apt-get")}
    assert wanted <= listed


def test_free_space(tmp_path):
    assert hosttools.check_free_space(tmp_path / "not" / "yet", 0.001) > 0
    with pytest.raises(errors.NotEnoughDisk, match=r"1000000\.0 GiB needed"):
        hosttools.check_free_space(tmp_path, 1_000_000)
