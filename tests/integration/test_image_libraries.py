"""rackforge runs on the libraries the image takes from Debian 13, not on the test host's.

Inside the built minimal image (chroot into its unpacked root, the image's own
python3): every rackforge module the image carries imports, each library comes
from Debian's dist-packages at the release's version, and the calls rackforge
makes of them work there (a CSR and a certificate with the image's
cryptography, netlink reads with its pyroute2 and the attribute names
network.py uses, udev enumeration with its pyudev, sd_notify with its
systemd-python, a TLS session with its requests).  The five-node nspawn test
then runs all of it for real on the image's systemd and etcd.
"""

import json
import subprocess

import pytest

pytestmark = pytest.mark.integration

PROBE = r'''
import importlib, json, os, pkgutil, sys
sys.path.insert(0, "/usr/lib/rackforge")
import rackforge
out = {"modules": [], "failed": {}, "libs": {}}
for info in pkgutil.walk_packages(rackforge.__path__, "rackforge."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
        out["modules"].append(info.name)
    except Exception as exc:
        out["failed"][info.name] = repr(exc)
from importlib.metadata import version
for dist, mod in (("pyroute2", "pyroute2"), ("pyudev", "pyudev"),
                  ("cryptography", "cryptography"), ("requests", "requests"),
                  ("systemd-python", "systemd"), ("PyYAML", "yaml"), ("Jinja2", "jinja2"),
                  ("tftpy", "tftpy")):
    m = importlib.import_module(mod)
    out["libs"][dist] = {"version": version(dist), "file": m.__file__}
# what rackforge does with them
from rackforge.cluster import ca
import tempfile
d = tempfile.mkdtemp()
auth = ca.CertificateAuthority.init(d + "/ca", cluster="probe")
csr, key = ca.make_csr("probe")
cert = auth.issue("probe", ["10.0.0.1"], csr, usage=ca.CONTROLLER).cert_pem
out["cert_ok"] = auth.verify(cert) and ca.has_usage(cert, ca.CONTROLLER)
from pyroute2 import IPRoute
with IPRoute() as ipr:
    links = [l.get_attr("IFLA_IFNAME") for l in ipr.get_links()]
out["links"] = links
import pyudev
out["udev_ok"] = isinstance(list(pyudev.Context().list_devices(subsystem="net")), list)
from systemd import daemon
out["notify"] = bool(daemon.notify("READY=1")) is False   # outside a unit: no socket
from rackforge.etcdkv import EtcdKV
out["etcd_client"] = EtcdKV("https://127.0.0.1:1").endpoint
# the node agent's catalogue, with every record and template, ships in the image
from rackforge.nodeagent import catalogue, hooks
out["services"] = [s.name for s in catalogue.load(**hooks.names()).services]
print(json.dumps(out))
'''


def test_rackforge_on_the_images_own_libraries(image_root):
    res = subprocess.run(["chroot", str(image_root), "/usr/bin/python3", "-c", PROBE],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["failed"] == {}
    assert "rackforge.cluster.join" in out["modules"] and "rackforge.states" in out["modules"]
    build_side = ("rackforge.images", "rackforge.virt")
    assert not [m for m in out["modules"] if m.startswith(build_side)]
    libs = out["libs"]
    for dist in ("pyroute2", "pyudev", "cryptography", "requests", "systemd-python"):
        assert libs[dist]["file"].startswith("/usr/lib/python3/dist-packages/"), dist
    assert libs["tftpy"]["file"].startswith("/usr/lib/rackforge/")      # the pinned one
    assert libs["pyroute2"]["version"].startswith("0.7.")                # Debian 13's
    assert int(libs["cryptography"]["version"].split(".")[0]) >= 43
    assert out["cert_ok"] and "lo" in out["links"] and out["udev_ok"] and out["notify"]
    assert {"mariadb", "rabbitmq", "keepalived"} <= set(out["services"])
