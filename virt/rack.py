"""The virtual rack's daemon: namespace, bridge, taps, one BMC per node.

``python -m rackforge.virt.rack run N`` (started detached by ``rackforge virt
rack up``) builds the rack and keeps it until SIGTERM:

* namespace ``rf-virt-<short>`` with bridge ``br0`` at 10.213.88.1/24 and one
  tap per node on it: guests and anything serving them (DHCP, TFTP, HTTP)
  live only there;
* one BMC process per node (:mod:`rackforge.virt.bmc`) on 127.0.0.1, ports
  6230, 6231, ... in the host's namespace (loopback only), or with
  ``--bmc-network`` inside the rack's namespace on the bridge's address
  10.213.88.1 (the same ports), where the guests reach them as a seed reaches
  its rack's BMCs; user ``admin``, password generated here and written 0600
  to ``<state>/virt/bmc-password``;
* per node an empty qcow2 disk, or with ``--disk NODE=IMAGE`` a qcow2 overlay
  over a ready image (an installed seed's disk), which is never written;
* ``<state>/virt/rack.json``: the namespace, where the BMCs are, the daemon's
  pid and per node its name, MAC, serial, BMC address:port, tap, folder and
  console log.

On SIGTERM (``rackforge virt rack down``) or any failure it stops the BMCs
(each stops its guest), kills whatever is left in the namespace, removes taps,
bridge and namespace and deletes ``<state>/virt``.  :func:`teardown` does the
same from ``rack.json`` alone, for a daemon that died.
"""

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rackforge import errors, paths
from rackforge.fileutil import atomic_write
from rackforge.proc import stop_process
from rackforge.virt.guest import (FIRMWARES, MAX_NODES, GuestSpec, GuestStartFailed, kill_pid,
                                  mac_for, node_name, pid_alive, prepare, read_pid, serial_for,
                                  tap_name)

LOG = logging.getLogger("rackforge.virt.rack")

SUBNET = "10.213.88"
BRIDGE = "br0"
BRIDGE_IP = SUBNET + ".1"
BRIDGE_ADDRESS = BRIDGE_IP + "/24"
BMC_ADDRESS = "127.0.0.1"
BASE_PORT = 6230
RACK_FILE = "rack.json"
PASSWORD_FILE = "bmc-password"


class VirtError(errors.RackforgeError):
    message = "virtual rack: {detail}"


def virt_dir():
    return paths.state_dir() / "virt"


def rack_file():
    return virt_dir() / RACK_FILE


def password_file():
    return virt_dir() / PASSWORD_FILE


def netns_name(short=None):
    return "rf-virt-%s" % (short or uuid.uuid4().hex[:6])


def parse_disks(items):
    """``{node name: absolute path}`` from ``--disk NODE=IMAGE`` options.

    Each image must be a readable file; a node is named once.  Which nodes exist
    is :func:`plan`'s check.
    """
    disks = {}
    for item in items or ():
        name, sep, path = str(item).partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise VirtError(detail="--disk %s: write --disk NODE=IMAGE, like --disk "
                                   "node-01=/srv/seed.qcow2" % item)
        if name in disks:
            raise VirtError(detail="--disk: %s is given twice" % name)
        image = Path(path).expanduser().resolve()
        if not image.is_file() or not os.access(image, os.R_OK):
            raise VirtError(detail="--disk %s: %s is not a readable image file"
                                   % (name, image))
        disks[name] = str(image)
    return disks


def plan(count, netns, vdir, firmware="bios", memory_mib=1024, base_port=BASE_PORT,
         bmc_network=False, disks=None):
    """The nodes of a rack of ``count``: a list of :class:`GuestSpec` (pure).

    :param bmc_network: the BMCs run inside ``netns`` on the bridge's address
        (reachable from the guests), not on the host's loopback
    :param disks: ``{node name: image}``: that node's disk is an overlay over the image
    """
    if not 1 <= count <= MAX_NODES:
        raise VirtError(detail="the rack holds 1 to %d nodes, not %d" % (MAX_NODES, count))
    if firmware not in FIRMWARES:
        raise VirtError(detail="firmware must be one of %s" % ", ".join(FIRMWARES))
    if memory_mib < 256:
        raise VirtError(detail="a guest needs at least 256 MiB of memory")
    if base_port + count - 1 > 65535:
        raise VirtError(detail="BMC ports %d+%d do not fit" % (base_port, count))
    disks = dict(disks or {})
    names = [node_name(i) for i in range(1, count + 1)]
    unknown = sorted(set(disks) - set(names))
    if unknown:
        raise VirtError(detail="--disk %s: the rack's nodes are %s to %s"
                               % (unknown[0], names[0], names[-1]))
    vdir = Path(vdir)
    return [GuestSpec(name=node_name(i), index=i, mac=mac_for(i), netns=netns, tap=tap_name(i),
                      workdir=str(vdir / "nodes" / node_name(i)), firmware=firmware,
                      memory_mib=memory_mib,
                      bmc_address=BRIDGE_IP if bmc_network else BMC_ADDRESS,
                      bmc_port=base_port + i - 1, password_file=str(vdir / PASSWORD_FILE),
                      serial=serial_for(i), base_disk=disks.get(node_name(i), ""),
                      bmc_netns=netns if bmc_network else "")
            for i in range(1, count + 1)]


def rack_info(netns, specs, pid, ready, bmc_pids=()):
    """The content of rack.json.  ``bmc_netns``: the namespace the BMCs are reached in
    (``ip netns exec NS rackforge power ...``), None for the host's loopback."""
    bmc_pids = list(bmc_pids) + [None] * (len(specs) - len(bmc_pids))
    return {
        "netns": netns, "bridge": BRIDGE, "address": BRIDGE_ADDRESS, "pid": pid,
        "ready": ready, "user": "admin", "password_file": str(Path(specs[0].password_file)),
        "bmc_netns": specs[0].bmc_netns or None,
        "nodes": [{"name": s.name, "mac": s.mac, "serial": s.serial,
                   "bmc": "%s:%d" % (s.bmc_address, s.bmc_port),
                   "tap": s.tap, "dir": s.workdir, "console": str(s.console_log),
                   "firmware": s.firmware, "memory_mib": s.memory_mib,
                   "base_disk": s.base_disk or None, "bmc_pid": p}
                  for s, p in zip(specs, bmc_pids)],
    }


def load_info():
    try:
        return json.loads(rack_file().read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise VirtError(detail="%s is unreadable (%s): remove %s by hand"
                        % (rack_file(), e, virt_dir()))


def _ip(*args, check=True):
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode:
        raise VirtError(detail="'ip %s' failed: %s" % (" ".join(args), res.stderr.strip()))
    return res


def port_free(port, host=BMC_ADDRESS):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(specs):
    """BMC ports on the host's loopback must be free (a namespace of our own is empty)."""
    busy = [s.bmc_port for s in specs if not s.bmc_netns and not port_free(s.bmc_port)]
    if busy:
        raise VirtError(detail="UDP port(s) %s on %s are in use (another virtual rack or BMC "
                               "simulator?): stop it and run 'rackforge virt rack up' again"
                        % (", ".join(map(str, busy)), BMC_ADDRESS))


def setup_network(netns, specs):
    _ip("netns", "add", netns)
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", netns, "link", "add", BRIDGE, "type", "bridge", "forward_delay", "0",
        "stp_state", "0")
    _ip("-n", netns, "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE)
    _ip("-n", netns, "link", "set", BRIDGE, "up")
    for s in specs:
        _ip("-n", netns, "tuntap", "add", "dev", s.tap, "mode", "tap")
        _ip("-n", netns, "link", "set", s.tap, "master", BRIDGE, "up")


def bmc_command(spec, node_json):
    """The BMC process of ``spec``: in the rack's namespace when its BMC is there (pure).
    ``ip netns exec`` execs the command, so the pid stays the BMC's."""
    cmd = [sys.executable, "-m", "rackforge.virt.bmc", str(node_json)]
    return ["ip", "netns", "exec", spec.bmc_netns] + cmd if spec.bmc_netns else cmd


def start_bmc(spec):
    spec.dir.mkdir(parents=True, exist_ok=True)
    path = spec.save()
    with open(spec.dir / "bmc.log", "ab") as log:
        return subprocess.Popen(bmc_command(spec, path),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def prepare_disks(specs):
    """The overlays over given images, made before any BMC can power a node on."""
    for s in specs:
        if s.base_disk:
            try:
                prepare(s)
            except GuestStartFailed as e:
                raise VirtError(detail=str(e))


def namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def teardown(info, vdir, bmc_procs=()):
    """Stop everything a rack holds and remove it; safe to call twice."""
    for proc in bmc_procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)    # a stopped BMC cannot act on SIGTERM
            except ProcessLookupError:
                pass
            stop_process(proc, timeout=15)
    for node in info.get("nodes", []):
        pid = node.get("bmc_pid")
        if pid and pid_alive(pid) and _is_our_bmc(pid):
            kill_pid(pid, timeout=15)
        qemu = read_pid(Path(node["dir"]) / "qemu.pid")
        if qemu and pid_alive(qemu):
            kill_pid(qemu)
    netns = info.get("netns")
    if netns and netns in namespaces():
        pids = _ip("netns", "pids", netns, check=False).stdout.split()
        for pid in pids:
            kill_pid(int(pid))
        for node in info.get("nodes", []):
            _ip("-n", netns, "link", "del", node["tap"], check=False)
        _ip("-n", netns, "link", "del", BRIDGE, check=False)
        _ip("netns", "del", netns, check=False)
    shutil.rmtree(vdir, ignore_errors=True)


def _is_our_bmc(pid):
    try:
        return b"rackforge.virt.bmc" in Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return False


def _raise_exit(signum, frame):
    raise SystemExit(0)


def run(count, firmware="bios", memory_mib=1024, base_port=BASE_PORT, bmc_network=False,
        disks=None):
    """The daemon: build the rack, keep it until SIGTERM, remove it."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    vdir = virt_dir()
    netns = netns_name()
    specs = plan(count, netns, vdir, firmware, memory_mib, base_port, bmc_network, disks)
    info = rack_info(netns, specs, os.getpid(), False)
    procs = []
    try:
        check_ports(specs)
        atomic_write(rack_file(), json.dumps(info, indent=2) + "\n")
        atomic_write(password_file(), secrets.token_urlsafe(18) + "\n", mode=0o600)
        LOG.info("rack of %d in namespace %s", count, netns)
        prepare_disks(specs)
        setup_network(netns, specs)
        for s in specs:            # every node starts powered off
            procs.append(start_bmc(s))
        info = rack_info(netns, specs, os.getpid(), True, [p.pid for p in procs])
        atomic_write(rack_file(), json.dumps(info, indent=2) + "\n")
        LOG.info("rack up: BMCs on %s:%d-%d%s", specs[0].bmc_address, specs[0].bmc_port,
                 specs[-1].bmc_port, " inside namespace %s" % netns if bmc_network else "")
        reported = set()
        while True:
            for s, p in zip(specs, procs):
                if p.poll() is not None and s.name not in reported:
                    reported.add(s.name)
                    LOG.warning("%s: BMC exited with %s (see %s)", s.name, p.returncode,
                                s.dir / "bmc.log")
            time.sleep(1)
    except VirtError as e:
        LOG.error("%s", e)
        return 1
    finally:
        LOG.info("rack down: stopping BMCs and guests, removing %s", netns)
        teardown(info, vdir, procs)
    return 0


def probe(skip=()):
    """``probe``: print (JSON) the nodes of rack.json whose BMC answers a login and an
    authenticated power status from here; ``virt rack up`` runs it inside the rack's
    namespace when the BMCs are there.  Exit 1 with one line when a BMC refuses."""
    from rackforge.virt import cli

    info = load_info()
    if info is None:
        print("no virtual rack is up (%s is missing)" % rack_file(), file=sys.stderr)
        return 1
    try:
        found = cli.answering(info, skip=set(skip))
    except errors.RackforgeError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(found))
    return 0


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m rackforge.virt.rack")
    sub = p.add_subparsers(dest="action", required=True)
    q = sub.add_parser("run")
    q.add_argument("count", type=int)
    q.add_argument("--firmware", default="bios", choices=FIRMWARES)
    q.add_argument("--memory", type=int, default=1024)
    q.add_argument("--base-port", type=int, default=BASE_PORT)
    q.add_argument("--bmc-network", action="store_true")
    q.add_argument("--disk", action="append", default=[], metavar="NODE=IMAGE")
    q = sub.add_parser("probe")
    q.add_argument("--skip", action="append", default=[], metavar="NODE")
    args = p.parse_args(argv)
    if args.action == "probe":
        logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
        return probe(args.skip)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        disks = parse_disks(args.disk)
    except VirtError as e:
        LOG.error("%s", e)
        return 1
    return run(args.count, args.firmware, args.memory, args.base_port, args.bmc_network, disks)


if __name__ == "__main__":
    sys.exit(main())
