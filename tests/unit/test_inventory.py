"""Hardware inventory from recorded udev, /sys, /proc and tool output of several shapes.

``InventoryTestBase`` forbids running real commands (in the manner of
ironic-python-agent's test base): every sample replays its tool output.
Only ``test_real_host_inventory`` at the end reads this machine.
"""

import json
import subprocess
from pathlib import Path

import pytest
from inventory_samples import load

from rackforge.firstboot import inventory

SAMPLES = Path(__file__).parent / "samples" / "inventory"
SHAPES = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())


class InventoryTestBase:
    @pytest.fixture(autouse=True)
    def _no_real_commands(self, monkeypatch):
        def refuse(*args, **kwargs):
            raise AssertionError("a unit test tried to run a real command: %r" % (args,))
        monkeypatch.setattr(subprocess, "Popen", refuse)

    def collect(self, shape, tmp_path):
        return inventory.collect(load(SAMPLES / shape, tmp_path))

    def disks(self, inv):
        return {d.name: d for d in inv.disks}

    def nics(self, inv):
        return {n.name: n for n in inv.interfaces}


class TestEveryShape(InventoryTestBase):
    @pytest.mark.parametrize("shape", SHAPES)
    def test_round_trips_through_json(self, shape, tmp_path):
        inv = self.collect(shape, tmp_path)
        data = json.loads(inv.to_json())
        assert inventory.Inventory.from_dict(data) == inv
        assert data["cpu"]["count"] >= 1
        assert data["memory"]["total_bytes"] > 0

    @pytest.mark.parametrize("shape", SHAPES)
    def test_loopback_and_virtual_links_are_not_nics(self, shape, tmp_path):
        names = set(self.nics(self.collect(shape, tmp_path)))
        assert "lo" not in names
        assert not any(n.startswith("ifb") for n in names)

    @pytest.mark.parametrize("shape", SHAPES)
    def test_exactly_the_expected_system_disks(self, shape, tmp_path):
        expected = {"firecracker-vm": {"vda"}, "vm-virtio": {"vda"},
                    "server-2nvme-4hdd": {"nvme0n1", "nvme1n1"},
                    "live-iso": {"sr0", "loop0"}}[shape]
        inv = self.collect(shape, tmp_path)
        assert {d.name for d in inv.system_disks()} == expected

    def test_default_runner_returns_none_for_a_missing_tool(self):
        assert inventory.run_command(["rackforge-no-such-tool-xyz"]) is None


class TestServer(InventoryTestBase):
    """Dell R750: NVMe RAID1 root, 4 SATA HDD, USB stick, 2x25G in an LACP bond."""

    @pytest.fixture
    def inv(self, tmp_path):
        return self.collect("server-2nvme-4hdd", tmp_path)

    def test_cpu(self, inv):
        assert inv.cpu.model == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
        assert (inv.cpu.count, inv.cpu.sockets) == (8, 2)
        assert inv.cpu.architecture == "x86_64"   # from /proc, not the test host
        assert inv.cpu.frequency_mhz == 3200
        assert "vmx" in inv.cpu.flags and "fpu" not in inv.cpu.flags

    def test_memory_from_meminfo_and_dmidecode(self, inv):
        assert inv.memory.total_bytes == 131487224 * 1024
        assert inv.memory.physical_mb == 4 * 32 * 1024   # empty slots ignored

    def test_disks(self, inv):
        disks = self.disks(inv)
        assert sorted(disks) == ["nvme0n1", "nvme1n1", "sda", "sdb", "sdc", "sdd", "sde"]
        nvme = disks["nvme0n1"]
        assert nvme.size == 3750748848 * 512
        assert not nvme.rotational and nvme.bus == "nvme"
        assert nvme.model == "SAMSUNG MZQL21T9HCJR-00A07"
        assert nvme.serial == "S64GNE0R801234"
        assert nvme.wwn == "eui.36344730528012340025384500000001"
        assert nvme.by_path == "/dev/disk/by-path/pci-0000:3b:00.0-nvme-1"
        hdd = disks["sdc"]
        assert hdd.rotational and not hdd.system and not hdd.removable
        assert (hdd.vendor, hdd.model, hdd.serial) == ("ATA", "ST8000NM000A-2KE", "WKD0A1B2")
        assert hdd.wwn == "0x5000c500c1a2b3c2"
        stick = disks["sde"]
        assert stick.removable and stick.bus == "usb" and stick.model == "Ultra Fit"
        assert all(d.type == "disk" for d in disks.values())

    def test_md_and_empty_virtual_cd_are_not_disks(self, inv):
        assert "md0" not in self.disks(inv)
        assert "sr0" not in self.disks(inv)   # iDRAC virtual CD without media

    def test_bond_and_members(self, inv):
        nics = self.nics(inv)
        assert sorted(nics) == ["bond0", "bond0.100", "eno1", "eno2", "ens1f0np0", "ens1f1np1"]
        bond = nics["bond0"]
        assert bond.kind == "bond" and bond.members == ["ens1f0np0", "ens1f1np1"]
        assert nics["bond0.100"].kind == "vlan" and nics["bond0.100"].members == ["bond0"]
        port = nics["ens1f1np1"]
        assert port.master == "bond0"
        assert port.mac == "b8:ce:f6:3a:10:21"   # permanent address, not the bond's
        assert (port.driver, port.speed_mbps, port.pci_address) == ("mlx5_core", 25000,
                                                                    "0000:98:00.1")

    def test_down_link_has_no_speed_or_carrier(self, inv):
        eno2 = self.nics(inv)["eno2"]
        assert (eno2.carrier, eno2.speed_mbps, eno2.operstate) == (False, None, "down")

    def test_lldp_neighbours(self, inv):
        nics = self.nics(inv)
        assert nics["eno1"].lldp == inventory.LLDPNeighbour(
            chassis_id="00:1c:73:aa:bb:01", chassis_name="oob-sw-1", port_id="Ethernet7",
            port_description="r750-07 eno1", vlan=20)
        assert nics["ens1f0np0"].lldp.vlan == 100
        assert nics["ens1f1np1"].lldp.chassis_name == "leaf-b"
        assert nics["bond0"].lldp is None

    def test_system_bmc_and_boot_mode(self, inv):
        assert inv.system_vendor == inventory.SystemVendor(
            "Dell Inc.", "PowerEdge R750", "7XK2LM3", "4c4c4544-0058-4b10-8032-b7c04f4c4d33")
        assert inv.bmc == inventory.BMC("10.20.0.11", "f4:02:70:b1:22:3a")
        assert inv.boot_mode == "uefi"
        assert inv.hostname == "r750-07"


class TestVirtualMachine(InventoryTestBase):
    """QEMU q35 guest: virtio disks, a cloud-init CD, no dmidecode/lldpd/ipmitool."""

    @pytest.fixture
    def inv(self, tmp_path):
        return self.collect("vm-virtio", tmp_path)

    def test_disks(self, inv):
        disks = self.disks(inv)
        assert sorted(disks) == ["sr0", "vda", "vdb"]
        assert disks["vda"].system and disks["vda"].bus == "virtio"
        assert disks["vda"].serial is None and disks["vda"].vendor is None
        assert disks["vdb"].serial == "data1" and not disks["vdb"].system
        assert disks["sr0"].type == "rom" and disks["sr0"].removable

    def test_missing_tools_leave_fields_empty(self, inv):
        assert inv.memory.physical_mb is None
        assert inv.bmc == inventory.BMC()
        assert all(n.lldp is None for n in inv.interfaces)
        assert inv.system_vendor.serial_number is None
        assert inv.system_vendor.manufacturer == "QEMU"
        assert inv.boot_mode == "bios"

    def test_nic(self, inv):
        (nic,) = inv.interfaces
        assert (nic.name, nic.mac, nic.driver, nic.pci_address) == (
            "enp1s0", "52:54:00:a1:b2:c3", "virtio_net", "0000:01:00.0")
        assert nic.speed_mbps is None   # virtio reports -1


class TestLiveISO(InventoryTestBase):
    """Debian live from a BMC virtual CD, overlay root, no udev database."""

    @pytest.fixture
    def inv(self, tmp_path):
        return self.collect("live-iso", tmp_path)

    def test_medium_and_squashfs_loop_are_the_system(self, inv):
        disks = self.disks(inv)
        assert disks["sr0"].system and disks["sr0"].type == "rom" and disks["sr0"].read_only
        assert disks["loop0"].system and disks["loop0"].type == "loop"
        assert "loop1" not in disks   # unattached
        assert not disks["sda"].system and not disks["sdb"].system

    def test_sysfs_fallbacks_without_udev_database(self, inv):
        sda = self.disks(inv)["sda"]
        assert sda.model == "Micron_5300_MTFD" and sda.vendor == "ATA"
        assert sda.wwn == "naa.500a07512b3c4d5e"
        assert sda.serial is None and sda.by_path is None
        assert not sda.rotational

    def test_unconfigured_bmc_has_no_address(self, inv):
        assert inv.bmc == inventory.BMC(None, "ac:1f:6b:4e:5a:12")

    def test_lldp_without_system_name(self, inv):
        lldp = self.nics(inv)["eno1"].lldp
        assert lldp.chassis_name is None and lldp.chassis_id == "f8:c1:16:00:aa:01"
        assert lldp.port_description == "GigabitEthernet1/0/12" and lldp.vlan == 20


class TestParsers(InventoryTestBase):
    def test_pci_address(self):
        assert inventory.pci_address(
            "/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0") == "0000:00:03.0"
        assert inventory.pci_address("/devices/virtual/net/bond0") is None

    def test_sysfs_dmi_missing_falls_back_to_dmidecode(self, tmp_path):
        outputs = {"system-manufacturer": "HPE\n", "system-product-name": "ProLiant DL360 Gen10\n",
                   "system-serial-number": "CZ2D1F0ABC\n", "system-uuid": "Not Settable\n"}
        src = inventory.Sources(devices=lambda s: [], sys_root=tmp_path, proc_root=tmp_path,
                                run=lambda argv, timeout=20: outputs.get(argv[-1]))
        vendor = inventory.collect_system_vendor(src)
        assert vendor == inventory.SystemVendor("HPE", "ProLiant DL360 Gen10", "CZ2D1F0ABC",
                                                None)   # a placeholder, not a UUID

    def test_empty_sources_give_an_empty_but_valid_inventory(self, tmp_path):
        src = inventory.Sources(devices=lambda s: [], sys_root=tmp_path, proc_root=tmp_path,
                                run=lambda argv, timeout=20: None, machine="aarch64")
        inv = inventory.collect(src)
        assert inv.disks == [] and inv.interfaces == []
        assert inv.cpu.architecture == "aarch64"
        json.loads(inv.to_json())


def test_real_host_inventory():
    """The real collector on this machine: sane and serialisable, whatever the host."""
    inv = inventory.collect()
    data = json.loads(inv.to_json())
    assert data["cpu"]["count"] >= 1 and data["cpu"]["architecture"]
    assert data["memory"]["total_bytes"] > 0
    names = [n["name"] for n in data["interfaces"]]
    assert "lo" not in names and len(names) == len(set(names))
    for disk in data["disks"]:
        assert disk["size"] > 0 and disk["path"].startswith("/dev/")
        assert not disk["name"].startswith(("ram", "zram", "dm-"))
    assert len([d for d in data["disks"] if d["system"]]) <= 4
