"""The console of tty1, end to end on an nspawn node of the built ``minimal`` image.

The node seeds a cluster (first boot from its unit, the node agent started at
hand-over, ``rackforge-console.service`` enabled in place of tty1's getty).
``rackforge nodeagent console`` then runs inside the node in an 80x25 tmux pane
with TERM=linux, as on tty1, and is used with keys only:

1. the status page shows the real node: its name, its roles and why, its
   management address, read from the agent's local API;
2. F2, the network, root's password (set through chpasswd's stdin), a new
   address applied: the node answers on the new address and no longer on its
   own; nobody confirms, and 30 s later the agent puts the old address back by
   itself: the node answers there again, the console says so, and the agent's
   journal names each step;
3. a switch on the rack's bridge (lldpd in the rack's namespace, on a port of
   the bridge, which forwards LLDP frames here) is heard by the node's own
   lldpd, and the console's LLDP screen shows its name and port.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import harack
import pytest
from netns import ip, wait_until
from nspawn import rack
from serialconsole import CommandConsole

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SUBNET = "10.77.5"
NODE, WRONG, VIP, OPERATOR = (SUBNET + x for x in (".11", ".61", ".100", ".250"))
PASSWORD = "correct horse battery"
CONFIRM_WITHIN = 30


def answers(netns, address):
    """One ping from the rack's namespace gets a reply from ``address``."""
    return subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1",
                           address], capture_output=True).returncode == 0


@contextmanager
def lldp_switch(netns, bridge, workdir, name, port):
    """lldpd as a switch on a port of the rack's bridge, which forwards LLDP frames
    (``group_fwd_mask`` bit 14: 01:80:c2:00:00:0e)."""
    if not shutil.which("lldpd"):
        pytest.skip("lldpd is missing: tools/setup-host --e2e installs it")
    ip("-n", netns, "link", "set", bridge, "type", "bridge", "group_fwd_mask", "0x4000")
    ip("-n", netns, "link", "add", "lldp-sw", "type", "veth", "peer", "name", "lldp-br")
    ip("-n", netns, "link", "set", "lldp-br", "master", bridge, "up")
    ip("-n", netns, "link", "set", "lldp-sw", "up")
    # lldpd's unprivileged half opens the socket too: not under the test's 0700 tmp_path
    rundir = Path(tempfile.mkdtemp(prefix="rf-lldpd-", dir="/run"))
    rundir.chmod(0o755)
    sock = rundir / "lldpd.sock"
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "lldpd", "-d", "-u", str(sock),
                             "-I", "lldp-sw"], stdin=subprocess.DEVNULL,
                            stdout=open(workdir / "lldpd.log", "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        cli = ["ip", "netns", "exec", netns, "lldpcli", "-u", str(sock)]
        for words in (["configure", "system", "hostname", name],
                      ["configure", "ports", "lldp-sw", "lldp", "portdescription", port],
                      ["update"]):
            # lldpd answers on its socket once its privileged monitor is up
            wait_until(lambda: subprocess.run(cli + words, capture_output=True,
                                              timeout=30).returncode == 0, 30,
                       "lldpcli %s" % " ".join(words), interval=0.5)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(rundir, ignore_errors=True)


def test_the_console_shows_the_node_and_a_network_change_nobody_confirms_rolls_back(
        image_root, tmp_path):
    with rack(image_root, tmp_path / "nodes") as make:
        node = make("node1")
        node.mount()
        node.write("/etc/hostname", "node1\n", mode=0o644)
        node.write("/etc/rackforge/bootstrap.yaml",
                   "seed: true\ncluster: rack1\nvip: %s\n"
                   "management: {interface: host0, address: %s/24}\n" % (VIP, NODE))
        node.boot()
        harack.wait_firstboot(node)
        assert node.run("systemctl", "is-enabled", "rackforge-console.service").stdout \
            .strip() == "enabled"
        wait_until(lambda: node.run("test", "-S", "/run/rackforge-nodeagent/api.sock",
                                    check=False).returncode == 0, 120,
                   "the node agent's local API")
        node.run("chpasswd", input="root:%s\n" % PASSWORD)
        ip("-n", node.netns, "addr", "add", OPERATOR + "/24", "dev", node.bridge)
        wait_until(lambda: answers(node.netns, NODE), 60, "node1 to answer ping")

        argv = node.command("rackforge", "nodeagent", "console", "--confirm-within",
                            str(CONFIRM_WITHIN), env=["TERM=linux"])
        console = CommandConsole(argv, "rf-console-" + uuid.uuid4().hex[:8],
                                 tmp_path / "console.log")
        with console:
            # -- the real status, from the agent --------------------------------------
            console.wait_screen(r"rackforge console\s+node1", 120)
            console.wait_screen(r"management %s" % re.escape(NODE), 60)
            console.wait_screen(r"roles: controller", 60)
            console.wait_screen(r"controller: slot 1 of the controllers", 10)

            # -- a wrong address, not confirmed ---------------------------------------
            console.key_until("F2", lambda: "What to do" in console.screen(), 15, tries=3)
            console.keys("Enter")                     # the first action: the network
            console.wait_screen(r"root's password", 30)
            console.type(PASSWORD)
            console.keys("Enter")
            console.wait_screen(r"Now: host0 %s/24" % re.escape(NODE), 60)
            assert PASSWORD not in console.output()
            console.fill("Address/prefix", WRONG + "/24", 15)
            console.focus("< Apply >", 15)
            console.keys("Enter")
            console.wait_screen(r"Rolled back in 0:[0-9]{2} unless you keep it", 60)
            wait_until(lambda: answers(node.netns, WRONG), 30, "the node on its new address")
            assert not answers(node.netns, NODE)

            console.wait_screen(r"not confirmed in time: rolled back to host0 %s/24"
                                % re.escape(NODE), CONFIRM_WITHIN + 60)
            wait_until(lambda: answers(node.netns, NODE), 30, "the node on its own address")
            assert not answers(node.netns, WRONG)

            # -- LLDP: the switch the node's link goes to ------------------------------
            with lldp_switch(node.netns, node.bridge, tmp_path, "rack-switch-7",
                             "rack 7 port 12"):
                console.keys("Escape")                # back to the actions
                console.wait_screen(r"What to do", 15)
                console.keys("Down", "Down", "Enter")  # network, test, LLDP
                console.wait_screen(r"LLDP neighbours", 30)

                asked = [time.monotonic()]

                def heard():
                    """The switch on the screen; Refresh pressed every 5 s meanwhile (the
                    node's lldpd hears it within its first advertisements)."""
                    if "rack-switch-7" in console.screen():
                        return True
                    if time.monotonic() - asked[0] > 5:
                        console.focus("< Refresh >", 10)
                        console.keys("Enter")
                        asked[0] = time.monotonic()
                    return False
                console.wait_until(heard, 90, "the switch on the LLDP screen")
                console.wait_screen(r"host0:\s+rack-switch-7 port rack 7 port 12", 10)

        journal = node.journal("rackforge-nodeagent.service")
        assert "management network changing from host0 %s/24 to host0 %s/24" % (
            NODE, WRONG) in journal
        assert "management network back to host0 %s/24: not confirmed in time" % NODE \
            in journal
        said = node.run("journalctl", "-t", "rackforge-console", "--no-pager", "-o", "cat",
                        check=False).stdout
        assert "console: unlocked with root's password" in said
        assert "console: network: not confirmed in time: rolled back" in said
        assert PASSWORD not in said and PASSWORD not in journal
        # nothing was kept: networkd's file and the spec still say the old address
        kept = node.path("/etc/systemd/network/10-rackforge-host0.network").read_text()
        assert "Address=%s/24" % NODE in kept
        assert not node.run("test", "-e", "/var/lib/rackforge/network-pending.json",
                            check=False).returncode == 0
