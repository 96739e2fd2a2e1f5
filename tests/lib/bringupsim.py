"""A rack for ``rack up`` tests: fake BMCs, the in-memory registry, the real join service
and install API, and machines that behave as the real ones do from outside.

Each :class:`Machine` sits behind a fake BMC (``bmc/fake.py``; the fake inventory gives
address ``10.0.0.N`` the MAC ``52:54:00:00:00:N`` and serial ``FAKE000N``).  While it is
powered on, every :meth:`World.tick` moves it one step, deciding what it boots the way
the PXE service does (``pxe/bootscript.decide`` on its MAC's node):

- install boot: its installer asks ``/v1/install`` (MACs and serial), next tick reports
  ``installed`` (or ``failed`` with a reason) to ``/v1/install/report``; with
  ``hang_reboot`` it then does nothing until its BMC resets it;
- local boot: first boot joins with the token its install answer held (a real
  ``JoinService`` on the same registry), next tick hands over (``joining -> active``);
- discovery boot: the live appliance reports it to ``/v1/discover`` (a machine nobody
  enrolled is recorded ``discovered``; a known one is answered, nothing written); it
  never joins on its own.
"""

import json

from rackforge import registry, states
from rackforge.bmc import credentials
from rackforge.bmc.fake import FakeDriver
from rackforge.bringup import discoverapi, installapi
from rackforge.cluster import ca, join
from rackforge.pxe import bootscript

JOIN_URL = "https://10.0.0.1:9443"
PASSWORD = "Rack-Up-Pw-42"


def fake_identity(address):
    last = int(address.rsplit(".", 1)[1])
    return "52:54:00:00:%02x:%02x" % (last // 256, last % 256), "FAKE%04d" % last


class Machine:
    def __init__(self, world, address, fail=None, silent=False, hang_reboot=False):
        self.world, self.address = world, address
        self.mac, self.serial = fake_identity(address)
        self.fail, self.silent = fail, silent
        self.hang_reboot = hang_reboot      # after its install, on until its BMC resets it
        self.answer = self.report = self.discovered = None
        self.reported = False
        self.key = ca.new_key_pem()
        self.boots = []

    def inventory(self):
        return {"interfaces": [{"name": "eth0", "mac": self.mac, "kind": "physical"}],
                "system_vendor": {"serial_number": self.serial}}

    def step(self):
        w = self.world
        if w.fake.rack.power.get(self.address) != "on" or self.silent:
            return
        if self.hang_reboot and self.reported and not w.calls(self.address, "power reset"):
            return                          # its reboot into the disk hung
        node = w.registry.node_by_mac(self.mac)
        decision = bootscript.decide(node)
        self.boots.append(decision.kind)
        if decision.kind == states.INSTALL:
            if self.answer is None:
                got = w.install.install({"node": node.id, "macs": [self.mac],
                                         "serial": self.serial},
                                        "10.0.1." + self.address.split(".")[3])
                self.answer, self.report = got["answer"], got["report"]
            elif not self.reported:
                result = "failed" if self.fail else "installed"
                w.install.report({"node": node.id, "report": self.report, "result": result,
                                  "reason": self.fail or ""})
                self.reported = True
        elif decision.kind == states.DISCOVER:
            self.discovered = w.discover.discover({"macs": [self.mac], "serial": self.serial,
                                                   "inventory": self.inventory()},
                                                  "10.0.1.%s" % self.address.rsplit(".", 1)[1])
        elif decision.kind == states.LOCAL and node.state == "installed":
            self.join(node)
        elif node is not None and node.state == "joining":
            w.registry.transition(node.id, "active", states.FIRSTBOOT, frm="joining")

    def join(self, node, token=None, name=None, inventory=None):
        w = self.world
        name = name or self.answer["hostname"]
        csr, _ = ca.make_csr(name, self.key)
        body = {"name": name, "csr": csr.decode(), "inventory": inventory or self.inventory()}
        token = token or self.answer["cluster"]["join"]["token"]
        last = self.address.rsplit(".", 1)[1]
        return w.join.join(join.parse_request(body, "10.0.1.%s" % last, token=token))


class World:
    """The seed's view: registry with a cluster record, CA, join service, install API."""

    def __init__(self, tmp_path, monkeypatch):
        monkeypatch.setenv(credentials.KEY_ENV, str(tmp_path / "cluster.key"))
        self.key = credentials.load_key(create=True)
        self.registry = registry.MemoryRegistry()
        self.kv = self.registry.kv
        self.authority = ca.CertificateAuthority.init(tmp_path / "ca", cluster="rack1")
        self.kv.txn([], [("/rackforge/cluster", json.dumps({
            "name": "rack1", "join_endpoints": [JOIN_URL],
            "ca_sha256": self.authority.pin}).encode())])
        self.join = join.JoinService(self.registry, self.authority, ["https://10.0.0.1:2379"])
        self.install = installapi.InstallService(self.registry, self.authority.pin,
                                                 self.join.join_endpoints)
        self.discover = discoverapi.DiscoverService(self.registry)
        self.fake = FakeDriver()
        self.machines = {}
        self.ticks = 0

    def machine(self, address, **kw):
        self.machines[address] = Machine(self, address, **kw)
        return self.machines[address]

    def tick(self, seconds=0):
        self.ticks += 1
        for m in list(self.machines.values()):
            m.step()

    def node(self, address):
        return self.registry.node_by_mac(fake_identity(address)[0])

    def calls(self, address, action):
        return [c for c in self.fake.rack.calls if c == (address, action)]
