"""The cloud on a rack of nspawn nodes, used the operator's way: ``openstack --os-cloud
rackforge`` on a controller (its ``/etc/openstack/clouds.yaml``), for the cloud's
end-to-end tests and benchmark (tests/e2e/test_cloud.py, bench/cloud.py).

:func:`boot_vm` is the whole user journey: the tiny guest's kernel, ramdisk and disk
uploaded, a flat provider network and a tenant network with a router between them, a
security group rule for ping, a volume, a server that must reach ACTIVE and print its
DHCP address on its console, the volume attached, and a floating IP."""

import json
import re
import time

import harack
from netns import wait_until

GUEST_DIR = "/root/guest"
TENANT_CIDR = "192.168.77.0/24"
FLOATING_POOL = ("203.0.113.100", "203.0.113.150")


def admin_password(node):
    """The admin's password, from the clouds.yaml the agent wrote on a controller."""
    import yaml

    return yaml.safe_load(node.path("/etc/openstack/clouds.yaml").read_text())[
        "clouds"]["rackforge"]["auth"]["password"]


class Cloud:
    def __init__(self, node):
        self.node = node

    def osc(self, *args, check=True, timeout=300):
        """``openstack --os-cloud rackforge ARGS`` on the node: parsed when ARGS ask for
        JSON, its text otherwise (None when it failed and ``check`` is off)."""
        res = self.node.run("openstack", "--os-cloud", "rackforge", *args, check=False,
                            timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError("openstack %s: %s" % (" ".join(args), res.stderr[-2000:]))
        if res.returncode != 0:
            return None
        out = res.stdout.strip()
        return json.loads(out) if "json" in args and out else out

    def show(self, kind, name):
        return self.osc(kind, "show", name, "-f", "json")

    def wait_status(self, kind, name, want, timeout=600, bad=("ERROR", "error")):
        seen = {}

        def reached():
            item = self.show(kind, name)
            seen["item"] = item
            if item["status"] in bad:
                raise AssertionError("%s %s is %s: %s" % (kind, name, item["status"],
                                                          json.dumps(item)[-2000:]))
            return item["status"] == want
        wait_until(reached, timeout, "%s %s to be %s" % (kind, name, want), interval=3)
        return seen["item"]


def upload_guest(cloud, guest, name="guest"):
    """The guest's kernel, ramdisk and disk in Glance (direct kernel boot)."""
    node = cloud.node
    for path in (guest.kernel, guest.initramfs, guest.disk):
        node.write("%s/%s" % (GUEST_DIR, path.name), "", mode=0o644)
        node.path("%s/%s" % (GUEST_DIR, path.name)).write_bytes(path.read_bytes())
    kernel = cloud.osc("image", "create", "--disk-format", "aki", "--container-format", "aki",
                       "--public", "--file", "%s/%s" % (GUEST_DIR, guest.kernel.name),
                       name + "-kernel", "-f", "json")
    ramdisk = cloud.osc("image", "create", "--disk-format", "ari", "--container-format", "ari",
                        "--public", "--file", "%s/%s" % (GUEST_DIR, guest.initramfs.name),
                        name + "-ramdisk", "-f", "json")
    return cloud.osc("image", "create", "--disk-format", "raw", "--container-format", "bare",
                     "--public", "--file", "%s/%s" % (GUEST_DIR, guest.disk.name),
                     "--property", "kernel_id=%s" % kernel["id"],
                     "--property", "ramdisk_id=%s" % ramdisk["id"],
                     "--property", "os_command_line=console=ttyS0", name, "-f", "json")


def networks(cloud):
    """The flat provider network (``public``), a Geneve tenant network with a router."""
    osc = cloud.osc
    osc("network", "create", "--external", "--provider-network-type", "flat",
        "--provider-physical-network", "physnet1", "public", "-f", "json")
    osc("subnet", "create", "--network", "public", "--subnet-range", harack.PROVIDER_CIDR,
        "--gateway", harack.PROVIDER_GATEWAY, "--no-dhcp", "--allocation-pool",
        "start=%s,end=%s" % FLOATING_POOL, "public-subnet", "-f", "json")
    osc("network", "create", "private", "-f", "json")
    osc("subnet", "create", "--network", "private", "--subnet-range", TENANT_CIDR,
        "private-subnet", "-f", "json")
    osc("router", "create", "router1", "-f", "json")
    osc("router", "set", "--external-gateway", "public", "router1")
    osc("router", "add", "subnet", "router1", "private-subnet")
    osc("security", "group", "rule", "create", "--proto", "icmp", "--ingress", "default",
        "-f", "json")


def boot_vm(cloud, guest, marker, name="vm1", timings=None):
    """The user journey; returns ``{server, address, floating_ip, console}``."""
    timings = {} if timings is None else timings
    start = time.monotonic()
    image = upload_guest(cloud, guest)
    cloud.osc("flavor", "create", "--ram", "192", "--disk", "1", "--vcpus", "1", "tiny",
              "-f", "json")
    networks(cloud)
    cloud.osc("volume", "create", "--size", "1", "vol1", "-f", "json")
    timings["setup"] = time.monotonic() - start
    cloud.osc("server", "create", "--flavor", "tiny", "--image", image["id"], "--network",
              "private", name, "-f", "json")
    server = cloud.wait_status("server", name, "ACTIVE", timeout=900)
    timings["active"] = time.monotonic() - start
    fixed = [a for addrs in (server.get("addresses") or {}).values() for a in addrs] \
        if isinstance(server.get("addresses"), dict) else \
        re.findall(r"\d+\.\d+\.\d+\.\d+", str(server.get("addresses")))
    address = fixed[0] if fixed else None
    console = {}

    def printed():
        text = cloud.osc("console", "log", "show", name, check=False) or ""
        console["text"] = text
        return marker in text and ("address %s/" % address) in text
    wait_until(printed, 600, "%s's console to show %r and its address %s"
               % (name, marker, address), interval=5)
    timings["console"] = time.monotonic() - start
    cloud.wait_status("volume", "vol1", "available")
    cloud.osc("server", "add", "volume", name, "vol1")
    cloud.wait_status("volume", "vol1", "in-use")
    fip = cloud.osc("floating", "ip", "create", "public", "-f", "json")["floating_ip_address"]
    cloud.osc("server", "add", "floating", "ip", name, fip)
    return {"server": server, "address": address, "floating_ip": fip,
            "console": console["text"]}


def ping_from_provider(netns, address, timeout=300):
    """Until ``address`` answers ping from the provider network's side of the test bed."""
    import subprocess

    def answers():
        return subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "2",
                               address], capture_output=True).returncode == 0
    wait_until(answers, timeout, "%s to answer ping from the provider network" % address,
               interval=2)
