"""``rackforge virt rack up N | down | status``: the virtual rack.

``up`` starts the rack's daemon (:mod:`rackforge.virt.rack`) detached and
returns once every BMC answers an authenticated IPMI power status (asked from
inside the rack's namespace when the BMCs are there, ``--bmc-network``);
``down`` stops it and checks that nothing is left; ``status`` prints one line
per node.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

UP_TIMEOUT = 60.0
DOWN_TIMEOUT = 90.0
#: one round of asking the BMCs from inside the rack's namespace
PROBE_TIMEOUT = 60.0
# IPMI 1.5 "Get Channel Authentication Capabilities" (channel E, IPMI 2.0 bit, admin):
# the first packet of every client's login, answered by a BMC before any password.
AUTH_CAP_PING = bytes([0x06, 0x00, 0xFF, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09,
                       0x20, 0x18, 0xC8, 0x81, 0x00, 0x38, 0x8E, 0x04, 0xB5])


def add_commands(sub):
    p = sub.add_parser("virt", help="the virtual rack: QEMU guests behind simulated BMCs")
    vsub = p.add_subparsers(dest="virt", metavar="WHAT", required=True)
    r = vsub.add_parser("rack", help="bring a virtual rack up, down, or show it")
    rsub = r.add_subparsers(dest="action", metavar="ACTION", required=True)

    q = rsub.add_parser("up", help="start N guests (off) in a namespace, each behind a BMC")
    q.add_argument("count", type=int, metavar="N", help="number of nodes")
    q.add_argument("--firmware", choices=("bios", "uefi"), default="bios",
                   help="SeaBIOS with QEMU's iPXE ROM, or OVMF (default: %(default)s)")
    q.add_argument("--memory", type=int, default=1024, metavar="MIB",
                   help="memory per guest in MiB (default: %(default)s)")
    q.add_argument("--timeout", type=float, default=UP_TIMEOUT, metavar="SECONDS",
                   help="how long to wait for every BMC to answer (default: %(default)s)")
    q.add_argument("--bmc-network", action="store_true",
                   help="run the BMCs inside the rack's namespace on the bridge's address "
                        "(10.213.88.1), where the guests reach them (a seed's 'rack up'); "
                        "from the host: ip netns exec NS rackforge power ...")
    q.add_argument("--disk", action="append", default=[], metavar="NODE=IMAGE",
                   help="boot NODE (node-01...) from a ready disk image, such as an "
                        "installed seed's; the node writes to an overlay, never to IMAGE "
                        "(repeatable)")
    q.set_defaults(func=cmd_up)

    q = rsub.add_parser("down", help="stop guests and BMCs, remove the namespace and state")
    q.set_defaults(func=cmd_down)

    q = rsub.add_parser("status", help="one line per node: MAC, BMC, power, boot device")
    q.add_argument("--json", action="store_true", help="print rack.json with live states")
    q.set_defaults(func=cmd_status)


def _checks():
    from rackforge import errors
    if os.geteuid() != 0:
        raise errors.NotPrivileged(action="the virtual rack (network namespaces, taps)")
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                      ("ip", "iproute2")):
        if shutil.which(tool) is None:
            raise errors.HostToolMissing(tool=tool, install="apt-get install " + pkg)


def bmc_answers(address, timeout=0.5):
    """True if the IPMI BMC at ``HOST:PORT`` answers the first login packet."""
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(AUTH_CAP_PING, (host, int(port)))
            data = s.recv(512)
        except OSError:
            return False
    return data[:4] == AUTH_CAP_PING[:4] and len(data) > 20


def answering(info, skip=()):
    """Names of the nodes of ``info`` (rack.json) whose BMC answers the first login
    packet and then an authenticated power status, from where this runs; the
    nodes in ``skip`` are not asked.  A BMC refusing the login raises (one line)."""
    from rackforge.bmc.base import BMC
    from rackforge.bmc.drivers import get_driver

    power = get_driver("ipmi").power
    password = None
    found = []
    for node in info["nodes"]:
        if node["name"] in skip or not bmc_answers(node["bmc"]):
            continue
        if password is None:
            with open(info["password_file"]) as f:
                password = f.readline().strip()
        host, port = node["bmc"].rsplit(":", 1)
        power.get_power_state(BMC(address=host, port=int(port), username=info["user"],
                                  password=password, node=node["name"]))
        found.append(node["name"])
    return found


def probe_command(info, skip=()):
    """The probe of :func:`answering` run inside the namespace of the rack's BMCs (pure)."""
    cmd = ["ip", "netns", "exec", info["bmc_netns"], sys.executable, "-m",
           "rackforge.virt.rack", "probe"]
    for name in sorted(skip):
        cmd += ["--skip", name]
    return cmd


def _ask_bmcs(info, skip):
    """:func:`answering`, here or (BMCs on the rack's bridge) inside the namespace."""
    from rackforge.virt.rack import VirtError

    if not info.get("bmc_netns"):
        return answering(info, skip)
    try:
        res = subprocess.run(probe_command(info, skip), capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return []                   # nothing new this round; the caller's deadline decides
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    if res.returncode or not lines:
        errors = [ln for ln in res.stderr.splitlines() if ln.strip()]
        raise VirtError(detail="asking the BMCs inside namespace %s failed: %s"
                               % (info["bmc_netns"], errors[-1] if errors else "no output"))
    return json.loads(lines[-1])


def daemon_command(count, firmware, memory, bmc_network=False, disks=None):
    """The rack daemon's command line (pure); ``disks``: ``{node: image}``."""
    cmd = [sys.executable, "-m", "rackforge.virt.rack", "run", str(count),
           "--firmware", firmware, "--memory", str(memory)]
    if bmc_network:
        cmd.append("--bmc-network")
    for name, image in sorted((disks or {}).items()):
        cmd += ["--disk", "%s=%s" % (name, image)]
    return cmd


def _daemon_alive(info):
    from rackforge.virt.guest import pid_alive
    pid = info.get("pid")
    if not pid or not pid_alive(pid):
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"rackforge.virt.rack" in f.read()
    except OSError:
        return False


def cmd_up(args):
    from rackforge.virt import rack
    from rackforge.virt.rack import VirtError

    _checks()
    disks = rack.parse_disks(args.disk)
    specs = rack.plan(args.count, "check", rack.virt_dir(), args.firmware, args.memory,
                      bmc_network=args.bmc_network, disks=disks)
    info = rack.load_info()
    if info and _daemon_alive(info):
        raise VirtError(detail="a rack is already up (namespace %s): run 'rackforge virt rack "
                               "down' first" % info["netns"])
    if info:
        print("virt: removing the remains of a rack whose daemon died (%s)" % info["netns"],
              file=sys.stderr)
        rack.teardown(info, rack.virt_dir())
    rack.check_ports(specs)
    vdir = rack.virt_dir()
    vdir.mkdir(parents=True, exist_ok=True)
    # our own handle on the log: it stays readable even if the daemon removes the folder
    log = open(vdir / "rack.log", "w+b")
    proc = subprocess.Popen(
        daemon_command(args.count, args.firmware, args.memory, args.bmc_network, disks),
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        info = _wait_ready(proc, log, args.timeout)
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=DOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        log.close()
    _print_table(info)
    print("\nBMC user admin, password in %s; guests and DHCP only inside namespace %s"
          % (info["password_file"], info["netns"]))
    if info.get("bmc_netns"):
        print("BMCs on the rack's bridge inside %s: ip netns exec %s rackforge power status "
              "--bmc %s --user admin --password-file %s"
              % (info["bmc_netns"], info["bmc_netns"], info["nodes"][0]["bmc"],
                 info["password_file"]))
    return 0


def _daemon_error(log):
    log.seek(0)
    lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if " ERROR " in ln or ln.startswith("Traceback")]
    line = (errors or lines or ["no output"])[-1]
    if " ERROR " in line:
        line = line.split(": ", 1)[-1]
    return line[len("virtual rack: "):] if line.startswith("virtual rack: ") else line


def _wait_ready(proc, log, timeout):
    from rackforge.virt import rack
    from rackforge.virt.rack import VirtError

    deadline = time.monotonic() + timeout
    answered = set()
    while True:
        if proc.poll() is not None:
            raise VirtError(detail="the rack's daemon exited: %s" % _daemon_error(log))
        info = rack.load_info()
        if info and info.get("ready") and info.get("pid") == proc.pid:
            answered.update(_ask_bmcs(info, answered))
            if len(answered) == len(info["nodes"]):
                return info
        if time.monotonic() >= deadline:
            missing = [n["name"] for n in (info or {}).get("nodes", [])
                       if n["name"] not in answered]
            raise VirtError(detail="not every BMC answered within %ds (%s); the daemon's log: "
                                   "%s" % (timeout, ", ".join(missing) or "rack not built",
                                           rack.virt_dir() / "rack.log"))
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass


def cmd_down(args):
    from rackforge.virt import rack
    from rackforge.virt.guest import kill_pid, pid_alive
    from rackforge.virt.rack import VirtError

    _checks()
    info = rack.load_info()
    if info is None:
        print("virt: no virtual rack is up")
        return 0
    if _daemon_alive(info):
        os.kill(info["pid"], signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT
        while pid_alive(info["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(info["pid"]):
            kill_pid(info["pid"], timeout=1)
    rack.teardown(info, rack.virt_dir())      # whatever a dead daemon left behind
    if info["netns"] in rack.namespaces():
        raise VirtError(detail="namespace %s is still there: check 'ip netns pids %s'"
                               % (info["netns"], info["netns"]))
    print("virt: rack down, namespace %s removed" % info["netns"])
    return 0


def live_status(info):
    """rack.json plus, per node, power (QEMU runs), boot device and BMC state."""
    from pathlib import Path

    from rackforge.virt.guest import BOOT_DEVICES, pid_alive, read_pid

    for node in info["nodes"]:
        d = Path(node["dir"])
        qemu = read_pid(d / "qemu.pid")
        node["power"] = "on" if qemu and pid_alive(qemu) else "off"
        node["qemu_pid"] = qemu if node["power"] == "on" else None
        try:
            boot = (d / "boot-device").read_text().strip()
        except FileNotFoundError:
            boot = "network"
        node["boot"] = {"network": "pxe", "hd": "disk", "default": "disk"}.get(
            boot if boot in BOOT_DEVICES else "network")
        node["bmc_state"] = _bmc_state(node.get("bmc_pid"))
    info["daemon"] = "running" if _daemon_alive(info) else "dead"
    return info


def _bmc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, TypeError, IndexError):
        return "dead"
    return {"T": "stopped", "t": "stopped", "Z": "dead", "X": "dead"}.get(state, "up")


def format_table(info):
    rows = [("NODE", "MAC", "BMC", "BMC-STATE", "POWER", "BOOT", "CONSOLE")]
    for n in info["nodes"]:
        rows.append((n["name"], n["mac"], n["bmc"], n["bmc_state"], n["power"], n["boot"],
                     n["console"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


def _print_table(info):
    info = live_status(info)
    print("rack: namespace %s, bridge %s %s, daemon %s (pid %s)%s"
          % (info["netns"], info["bridge"], info["address"], info["daemon"], info["pid"],
             ", BMCs inside the namespace" if info.get("bmc_netns") else ""))
    for line in format_table(info):
        print(line)


def cmd_status(args):
    from rackforge.virt import rack

    info = rack.load_info()
    if info is None:
        print("virt: no virtual rack is up", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(live_status(info), indent=2))
    else:
        _print_table(info)
    return 0
