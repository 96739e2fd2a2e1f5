"""The installer's screens, headless (Textual's pilot at 80x25) on recorded inventories and
recorded wipefs/blkid output: every screen and its checks, Back, the boot medium, the
typed confirmation for a disk holding data, the plan handed to a fake writer (the same
plan as an answer file's), the join token never on a screen, and the console's limits
(ASCII glyphs, 16 colours)."""

import copy
import os
from pathlib import Path

import pytest
from inventory_samples import load
from rich.color import ColorType

from pilot import Keys, run_app, screen_text
from probes import Runner, no_real_commands  # noqa: F401 (autouse)
from rackforge import cli
from rackforge.firstboot import inventory
from rackforge.installer import answer, plan, tui, tuicmd, tuimodel, write

SAMPLES = Path(__file__).parent / "samples"
TOKEN = "q7x2kd.9f3h1m0c8b7v6n5z"
PIN = "sha256:" + "5e" * 32
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILzhpzCzZ1JMKhfAmh+HhKvtei5gpbQHaF0MLitbROET "
       "operator@laptop")
SDA = "wwn:0x5000c500c1a2b3c0"
SDB = "wwn:0x5000c500c1a2b3c1"
#: what the Linux console's font has: printable ASCII (borders are ASCII or none)
CONSOLE_GLYPHS = set(map(chr, range(32, 127)))


class FakeInstall:
    """``installer.run.install`` as the TUI calls it: records the plan, reports progress."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def __call__(self, plan_, console, cmdline):
        self.calls.append((plan_, cmdline))
        for step in write.STEPS:
            console.progress(step, 0.0, "%s ..." % step)
            if step == "copy":
                console.progress(step, 0.5, None)
                if self.fail:
                    raise self.fail
            console.progress(step, 1.0, "%s done" % step)
        console.line("warning: no NVRAM entry")
        return 42.0


@pytest.fixture(scope="module")
def recorded_inventories(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inventory")
    return {name: inventory.collect(load(SAMPLES / "inventory" / name, tmp / name))
            for name in ("server-2nvme-4hdd", "vm-virtio")}


@pytest.fixture
def dell(recorded_inventories):
    """The Dell (2 NVMe, 4 HDD, 4 NICs) booted from its USB stick: the installer's case."""
    inv = copy.deepcopy(recorded_inventories["server-2nvme-4hdd"])
    for disk in inv.disks:
        disk.system = disk.name == "sde"
    return inv


class Operator(Keys):
    """Keys as the person at the installer's console presses them."""

    async def next(self):
        await self.pilot.press("f10")
        await self.pause()

    async def back(self):
        await self.pilot.press("escape")
        await self.pause()

    async def disk(self, stable_id):
        rows = self.app.flow.disks
        await self.choose("disks", str(next(i for i, r in enumerate(rows)
                                            if r.stable_id == stable_id)))
        await self.next()

    async def network(self, address="10.0.0.11/24", gateway="10.0.0.1", nic="eno1"):
        await self.choose("nic", nic)
        await self.type("address", address)
        await self.type("gateway", gateway)
        await self.next()

    async def create(self, name="rack1", vip="10.0.0.100"):
        await self.type("name", name)
        await self.type("vip", vip)
        await self.next()

    async def join(self, endpoints="https://10.0.0.11:9443", token=TOKEN, pin=PIN):
        await self.choose("mode", "join")
        await self.type("endpoints", endpoints)
        await self.type("token", token)
        await self.type("ca_sha256", pin)
        await self.next()

    async def hostname(self, name="node1"):
        await self.type("hostname", name)
        await self.next()

    async def ssh(self, key=KEY):
        await self.type("key", key)
        await self.next()

    async def seed_to_summary(self, disk=SDA):
        await self.disk(disk)
        await self.network()
        await self.create()
        await self.hostname()
        await self.ssh()

    async def install(self):
        self.screen.query_one("#next").focus()
        await self.pilot.press("enter")
        await self.pause()


SEED_FILE = """\
version: 1
hostname: node1
disk:
  match: {wwn: "%s"}
  wipe: %s
network: {interface: eno1, address: 10.0.0.11/24, gateway: 10.0.0.1}
cluster:
  create: {name: rack1, vip: 10.0.0.100}
ssh_authorized_keys: ["%s"]
"""


# -- the disk screen ---------------------------------------------------------------------
def test_disk_screen_lists_the_disks_by_stable_id_and_marks_the_boot_medium_and_data(dell):
    shown = {}

    async def script(pilot):
        shown["text"] = screen_text(pilot.app)

    run_app(tui.InstallerApp(dell, run=Runner({"/dev/sdb": "gpt"})), script)
    text = shown["text"]
    assert "1/6  Target disk" in text
    for i in range(4):
        assert "wwn:0x5000c500c1a2b3c%d  7.3 TiB  sd%s" % (i, "abcd"[i]) in text
    assert "ST8000NM000A-2KE, serial WKD0A1B1, HOLDS DATA (PMBR, gpt)" in text
    assert "ST8000NM000A-2KE, serial WKD0A1B0, empty" in text
    assert " -  serial:4C530001230815116541  29.2 GiB  sde" in text
    assert "THE BOOT MEDIUM: cannot be chosen" in text


def test_no_disk_chosen_stays_on_the_disk_screen(dell):
    async def script(pilot):
        op = Operator(pilot)
        await op.next()
        assert op.screen.NAME == "disk"
        assert "disk: no disk chosen" in op.problems()

    run_app(tui.InstallerApp(dell, run=Runner()), script)


def test_the_boot_medium_cannot_be_chosen(dell):
    async def script(pilot):
        op = Operator(pilot)
        box = op.screen.query_one("#disks", tui.ChoiceList)
        boot = str(next(i for i, r in enumerate(op.app.flow.disks) if r.disk.name == "sde"))
        highlighted = set()
        for _ in range(2 * len(op.app.flow.disks)):     # the arrows never stop on it
            await pilot.press("down")
            highlighted.add(box.highlighted)
        assert int(boot) not in highlighted and len(highlighted) == 6
        await pilot.press("end", "enter")
        assert box.chosen == ["5"]                      # sdd, the last one that can be
        box.chosen = []
        box.choose(boot)                                # nor can it be chosen directly
        assert box.chosen == []
        await op.next()
        assert op.screen.NAME == "disk"

    run_app(tui.InstallerApp(dell, run=Runner()), script)
    rows = tuimodel.disk_rows(dell, Runner())
    boot = next(r for r in rows if r.disk.name == "sde")
    problems = tuimodel.Flow(dell, Runner()).submit_disk(boot)
    assert [str(p) for p in problems] == [
        "disk: serial:4C530001230815116541 is the boot medium; choose another disk"]


# -- the network screen ------------------------------------------------------------------
def test_a_bad_address_stays_on_the_network_screen(dell):
    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDA)
        for address, gateway, expected in [
                ("10.0.0.300/24", "", "network.address: is not an IPv4 address with prefix"),
                ("10.0.0.11", "", "network.address: needs a prefix length"),
                ("", "", "network.address: is missing"),
                ("10.0.0.11/24", "10.9.9.9", "network.gateway: 10.9.9.9 is not another host")]:
            await op.network(address, gateway)
            assert op.screen.NAME == "network"
            assert expected in op.problems()
            assert op.app.flow.answers.network is None
        await op.network("10.0.0.11/24", "")
        assert op.screen.NAME == "cluster"

    run_app(tui.InstallerApp(dell, run=Runner()), script)


def test_a_focused_field_does_not_blink_and_its_cursor_is_at_the_end(dell):
    """A blinking cursor redraws its line twice a second for as long as the field has the
    focus: on a serial console, bytes on a slow line for nothing."""
    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDA)
        box = op.screen.query_one("#address", tui.ConsoleInput)
        box.focus()
        await op.pause()
        assert box.has_focus
        assert not box._blink_timer._active.is_set()
        await pilot.pause(0.6)          # past Textual's blink interval (0.5 s)
        assert box._cursor_visible
        # and the cursor is at the end whenever the field takes the focus
        box.value = "10.0.0.11/24"
        box.cursor_position = 0
        op.screen.query_one("#gateway", tui.ConsoleInput).focus()
        await op.pause()
        box.focus()
        await op.pause()
        assert box.cursor_position == len("10.0.0.11/24")

    run_app(tui.InstallerApp(dell, run=Runner()), script)


def test_dhcp_hides_the_static_fields(dell):
    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDA)
        await op.type("address", "10.0.0.11/24")
        await op.choose("mode", "dhcp")
        await op.pause()
        assert "Address/prefix" not in screen_text(op.app)
        await op.next()
        assert op.app.flow.answers.network == {"interface": "eno1", "address": "dhcp"}

    run_app(tui.InstallerApp(dell, run=Runner()), script)


def test_bond_and_vlan_where_there_are_several_nics(dell):
    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDA)
        text = screen_text(op.app)
        assert "eno1             f4:02:70:b1:22:30  link up 1000 Mb/s  tg3" in text
        assert "eno2             f4:02:70:b1:22:31  no link  tg3" in text
        await op.choose("nic", "ens1f0np0")
        await op.choose("bond", "ens1f1np1")
        await op.choose("bond-mode", "802.3ad")
        await op.type("vlan", "100")
        await op.network(nic="ens1f0np0")
        assert op.screen.NAME == "cluster"

    app = run_app(tui.InstallerApp(dell, run=Runner()), script)
    assert app.flow.answers.network == {
        "bond": {"name": "bond0", "mode": "802.3ad", "members": ["ens1f0np0", "ens1f1np1"]},
        "vlan": {"id": 100}, "address": "10.0.0.11/24", "gateway": "10.0.0.1"}


def test_one_nic_offers_no_bond(recorded_inventories):
    async def script(pilot):
        op = Operator(pilot)
        await op.disk("serial:data1")
        assert not op.screen.query("#bond")
        assert "enp1s0" in screen_text(op.app)
        await op.type("vlan", "4095")
        await op.network(nic="enp1s0")
        assert "network.vlan.id: must be a whole number from 1 to 4094" in op.problems()

    run_app(tui.InstallerApp(recorded_inventories["vm-virtio"], run=Runner()), script)


# -- the cluster screen ------------------------------------------------------------------
def test_a_bad_vip_stays_on_the_cluster_screen(dell):
    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDA)
        await op.network()
        for vip, expected in [
                ("10.0.0", "cluster.create.vip: '10.0.0' is not an IPv4 address"),
                ("192.168.1.5", "cluster.create.vip: is not a free address of the "
                                "management network"),
                ("10.0.0.11", "cluster.create.vip: is not a free address")]:
            await op.create(vip=vip)
            assert op.screen.NAME == "cluster"
            assert expected in op.problems()
        await op.create(vip="10.0.0.100")
        assert op.screen.NAME == "hostname"

    run_app(tui.InstallerApp(dell, run=Runner()), script)


def test_join_without_a_token(dell):
    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDA)
        await op.network()
        await op.join(token="")
        assert op.screen.NAME == "cluster"
        assert "cluster.join.token: is missing" in op.problems()
        await op.type("token", "not-a-token")
        await op.next()
        assert "cluster.join.token: is not a join token" in op.problems()

    run_app(tui.InstallerApp(dell, run=Runner()), script)


def test_the_token_is_never_on_a_screen_once_typed(dell):
    seen = []

    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDA)
        await op.network()
        await op.choose("mode", "join")
        await op.type("token", TOKEN)
        seen.append(screen_text(op.app))
        assert "Join token       " + "*" * len(TOKEN) in seen[-1]
        await op.join()
        for step in (op.hostname, op.ssh):
            seen.append(screen_text(op.app))
            await step()
        seen.append(screen_text(op.app))
        assert op.screen.NAME == "summary"
        await op.back()
        await op.back()
        await op.back()
        seen.append(screen_text(op.app))
        assert op.screen.NAME == "cluster"

    app = run_app(tui.InstallerApp(dell, run=Runner(), dry_run=True), script)
    assert app.flow.answers.cluster.token == TOKEN
    assert "cluster: joins through https://10.0.0.11:9443 (token given, not shown)" in seen[-2]
    for text in seen:
        assert TOKEN not in text and TOKEN.split(".")[1] not in text


# -- host name, SSH key ---------------------------------------------------------------------
def test_a_bad_hostname_and_a_bad_ssh_key(dell):
    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDA)
        await op.network()
        await op.create()
        await op.hostname("node_1")
        assert op.screen.NAME == "hostname"
        assert "hostname: 'node_1' is not a host name" in op.problems()
        await op.hostname("node1")
        await op.ssh("ssh-ed25519 AAAAnotakey you@laptop")
        assert op.screen.NAME == "ssh"
        assert "ssh_authorized_keys[0]: the key after ssh-ed25519 is not" in op.problems()
        await op.ssh("")                    # optional
        assert op.screen.NAME == "summary"
        assert "root ssh keys: none" in screen_text(op.app)

    run_app(tui.InstallerApp(dell, run=Runner()), script)


# -- Back ------------------------------------------------------------------------------------
def test_back_keeps_what_was_typed(dell):
    async def script(pilot):
        op = Operator(pilot)
        await op.disk(SDB)
        await op.network(address="10.0.0.12/24")
        await op.type("name", "rack7", keys=True)
        await op.back()
        assert op.screen.NAME == "network"
        assert op.screen.query_one("#address").value == "10.0.0.12/24"
        await op.back()
        assert op.screen.query_one("#disks").chosen == ["3"]
        await op.next()
        await op.next()
        assert op.screen.NAME == "cluster"
        assert op.screen.query_one("#name").value == "rack7"
        await op.next()
        await op.hostname("node7")
        await op.back()
        assert op.screen.query_one("#hostname").value == "node7"

    app = run_app(tui.InstallerApp(dell, run=Runner()), script)
    assert app.flow.answers.network["address"] == "10.0.0.12/24"
    assert app.flow.answers.cluster == answer.Create("rack7")


# -- the confirmation and the writer ---------------------------------------------------------
def test_nothing_is_written_before_the_confirmation_and_the_plan_is_the_answer_files(
        dell, tmp_path):
    runner, fake, reboots = Runner(), FakeInstall(), []

    async def script(pilot):
        op = Operator(pilot)
        await op.seed_to_summary()
        text = screen_text(op.app)
        assert "6/6  Summary and confirmation" in text
        assert "disk: %s (sda, 7.3 TiB, ST8000NM000A-2KE, serial" % SDA in text
        assert "network: eno1 10.0.0.11/24 via 10.0.0.1" in text
        assert "Confirm" not in text                    # an empty disk: no typed id
        assert op.screen.focused.id == "back"           # Enter alone does not install
        assert fake.calls == []
        await op.install()
        await op.app.workers.wait_for_complete()
        await op.pause()
        shown = screen_text(op.app)
        assert "copy           [####################] done" in shown
        assert "warning: no NVRAM entry" in shown
        assert "installed to /dev/sda (%s) in 42 s; rebooting in 10 s" % SDA in shown
        assert reboots == []

    run_app(tui.InstallerApp(dell, run=runner, install=fake, cmdline="console=ttyS0",
                             reboot=lambda: reboots.append(1)), script)
    assert all(argv[:2] in (["wipefs", "--no-act"], ["blkid", "-p"]) for argv in runner.calls)
    assert len(fake.calls) == 1
    installed, cmdline = fake.calls[0]
    assert cmdline == "console=ttyS0"
    path = tmp_path / "answer.yaml"
    path.write_text(SEED_FILE % (SDA[4:], "never", KEY))
    assert installed == plan.make_plan(answer.load(path), dell, run=Runner())
    assert not installed.wipe


def test_a_disk_holding_data_needs_its_id_typed(dell, tmp_path):
    fake = FakeInstall()
    runner = Runner({"/dev/sdb": "gpt"})

    async def script(pilot):
        op = Operator(pilot)
        await op.seed_to_summary(disk=SDB)
        text = screen_text(op.app)
        assert "holds PMBR, gpt: would be wiped (disk.wipe: force)" in text
        assert "sdb holds data (PMBR, gpt). Type its id %s or the word" % SDB in text
        assert op.screen.focused.id == "typed"
        await pilot.press("enter")                      # nothing typed: refused
        assert "type its id %s (or the word wipe)" % SDB in op.problems()
        await op.type("typed", SDA)                     # another disk's id
        await op.install()
        assert fake.calls == [] and op.screen.NAME == "summary"
        await op.type("typed", SDB)
        await op.install()
        await op.app.workers.wait_for_complete()

    run_app(tui.InstallerApp(dell, run=runner, install=fake, reboot=lambda: None), script)
    assert len(fake.calls) == 1
    path = tmp_path / "answer.yaml"
    path.write_text(SEED_FILE % (SDB[4:], "force", KEY))
    assert fake.calls[0][0] == plan.make_plan(answer.load(path), dell, run=runner)
    assert fake.calls[0][0].wipe and fake.calls[0][0].signatures == ["PMBR", "gpt"]


def test_the_typed_confirmation(dell, tmp_path):
    path = tmp_path / "answer.yaml"
    path.write_text(SEED_FILE % (SDB[4:], "force", KEY))
    wiped = plan.make_plan(answer.load(path), dell, run=Runner({"/dev/sdb": "gpt"}))
    for typed in (SDB, " wipe ", "wipe"):
        assert tuimodel.confirmation_problem(wiped, typed) is None
    for typed in ("", "yes", "sdb", SDA, "WIPE"):
        assert "type its id %s" % SDB in tuimodel.confirmation_problem(wiped, typed)
    empty = plan.make_plan(answer.load(path), dell, run=Runner())
    assert not empty.wipe and tuimodel.confirmation_problem(empty, "") is None


def seed_plan(dell, tmp_path):
    path = tmp_path / "answer.yaml"
    path.write_text(SEED_FILE % (SDA[4:], "never", KEY))
    return plan.make_plan(answer.load(path), dell, run=Runner())


async def confirm(pilot, plan_):
    """The progress screen as the summary's Install opens it."""
    pilot.app.confirmed(plan_)
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_a_failed_install_shows_one_failed_line_and_the_log(dell, tmp_path):
    fake = FakeInstall(fail=write.InstallError(disk="/dev/sda", step="copy",
                                               reason="rsync failed (exit 11)"))
    reboots = []

    async def script(pilot):
        await confirm(pilot, seed_plan(dell, tmp_path))
        text = screen_text(pilot.app)
        assert "FAILED: install to /dev/sda: copy: rsync failed (exit 11)" in text
        assert "the detail is in /var/log/rackforge/installer.log" in text
        assert "copy           [##########..........]  50%" in text
        await pilot.press("escape")                     # back to the screen below
        assert pilot.app.screen.NAME != "progress"

    run_app(tui.InstallerApp(dell, run=Runner(), install=fake,
                             reboot=lambda: reboots.append(1)), script)
    assert reboots == [] and len(fake.calls) == 1


def test_the_reboot_follows_a_good_install(dell, tmp_path):
    reboots = []

    async def script(pilot):
        await confirm(pilot, seed_plan(dell, tmp_path))
        assert "in 42 s; rebooting now" in screen_text(pilot.app)
        await pilot.press("ctrl+q", "escape")           # no leaving once installed
        assert pilot.app.is_running and pilot.app.screen.NAME == "progress"

    run_app(tui.InstallerApp(dell, run=Runner(), install=FakeInstall(), reboot_after=0,
                             reboot=lambda: reboots.append(1)), script)
    assert reboots == [1]


def test_a_dry_run_ends_with_the_plan_and_installs_nothing(dell):
    fake = FakeInstall()

    async def script(pilot):
        op = Operator(pilot)
        await op.seed_to_summary()
        assert "Dry run: Install shows the plan and writes nothing." in screen_text(op.app)
        await op.install()

    app = run_app(tui.InstallerApp(dell, run=Runner(), dry_run=True, install=fake), script)
    assert fake.calls == []
    assert isinstance(app.return_value, plan.InstallPlan)
    assert app.return_value.hostname == "node1"


# -- the console's limits --------------------------------------------------------------------
def test_every_screen_fits_the_linux_console(dell):
    """Printable ASCII only (no box-drawing or block glyphs, no bullet), and only the 16
    ANSI colours (or the terminal's default) on every screen."""
    seen = {}

    def look(app):
        glyphs, colours = set(), set()
        for strip in app.screen._compositor.render_strips():
            for segment in strip:
                glyphs.update(segment.text)
                style = segment.style
                for colour in (style.color, style.bgcolor) if style else ():
                    if colour is not None:
                        colours.add(colour.type)
        seen[app.screen.NAME or "progress"] = (glyphs - CONSOLE_GLYPHS, colours)

    async def script(pilot):
        op = Operator(pilot)
        look(op.app)
        await op.disk(SDB)
        look(op.app)
        await op.network()
        await op.join(token="")
        look(op.app)
        await op.join()
        look(op.app)
        await op.hostname()
        look(op.app)
        await op.ssh()
        look(op.app)
        await op.type("typed", "wipe")
        await op.install()
        await op.app.workers.wait_for_complete()
        await op.pause()
        look(op.app)

    run_app(tui.InstallerApp(dell, run=Runner({"/dev/sdb": "gpt"}), install=FakeInstall(),
                             reboot=lambda: None), script)
    assert set(seen) == {"disk", "network", "cluster", "hostname", "ssh", "summary",
                         "progress"}
    for name, (glyphs, colours) in seen.items():
        assert glyphs == set(), name
        assert colours <= {ColorType.DEFAULT, ColorType.STANDARD}, name


def test_the_focused_button_is_drawn_in_the_focus_colour(dell):
    """On a 16-colour console the focus is its colour alone: cyan behind the focused
    button, none behind the other (Textual's tint had drawn both the same)."""
    drawn = []

    def buttons(app):
        row = app.screen._compositor.render_strips()[-2]
        return {seg.text.strip(): seg.style.bgcolor.number if seg.style.bgcolor else None
                for seg in row if seg.text.strip()}

    async def script(pilot):
        op = Operator(pilot)
        await op.seed_to_summary()
        drawn.append(buttons(op.app))
        await pilot.press("tab")
        await op.pause()
        drawn.append(buttons(op.app))

    run_app(tui.InstallerApp(dell, run=Runner({})), script)
    cyan = 6
    assert drawn[0]["< Back >"] == cyan and drawn[0]["< Install >"] != cyan
    assert drawn[1]["< Install >"] == cyan and drawn[1]["< Back >"] != cyan


# -- the model alone ---------------------------------------------------------------------------
def test_network_fields_become_firstboots_mapping():
    f = tuimodel.NetworkFields
    assert tuimodel.network_value(f(nic="eno1", dhcp=True, address="x", gateway="y")) == {
        "interface": "eno1", "address": "dhcp"}
    assert tuimodel.network_value(f(nic="eno1", address=" 10.0.0.5/24 ", vlan="7")) == {
        "vlan": {"id": 7, "link": "eno1"}, "address": "10.0.0.5/24"}
    assert tuimodel.network_value(f(nic="eno1", bond_with=["eno1", "eno2"])) == {
        "bond": {"name": "bond0", "mode": "active-backup", "members": ["eno1", "eno2"]}}


def test_cluster_fields_become_the_cluster_section():
    f = tuimodel.ClusterFields
    assert tuimodel.cluster_value(f(name="rack1")) == {"create": {"name": "rack1"}}
    assert tuimodel.cluster_value(f(mode="join", endpoints="https://a:1, https://b:1",
                                    token=" %s " % TOKEN)) == {
        "join": {"endpoints": ["https://a:1", "https://b:1"], "token": TOKEN}}
    assert TOKEN not in repr(f(mode="join", token=TOKEN))


def test_problems_lead_back_to_their_screen():
    assert tuimodel.step_of("cluster.join.token").title == "Cluster"
    assert tuimodel.step_of("ssh_authorized_keys[0]").name == "ssh"
    assert tuimodel.step_of("disk.match").name == "disk"


# -- the command -------------------------------------------------------------------------------
def test_the_command_is_registered():
    args = cli.build_parser().parse_args(["installer", "tui", "--tty", "/dev/tty1",
                                          "--dry-run", "--inventory", "x.json"])
    assert (args.tty, args.dry_run, args.inventory) == ("/dev/tty1", True, "x.json")


def test_a_recorded_inventory_needs_a_dry_run(tmp_path, capsys):
    assert cli.main(["installer", "tui", "--inventory", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rackforge: error: --inventory needs --dry-run: a recorded inventory's "
                   "disks are not this machine's, so nothing is installed from one"]


def test_a_dry_run_prints_the_plan(dell, tmp_path, monkeypatch, capsys):
    path = tmp_path / "inventory.json"
    path.write_text(dell.to_json())

    def run(app, mouse=True):
        assert mouse is False and app.dry_run and app.flow.run is None
        answers = answer.Answers.from_dict({
            "version": 1, "hostname": "node1", "disk": {"match": {"wwn": SDA[4:]}},
            "network": {"interface": "eno1", "address": "dhcp"},
            "cluster": {"create": {"name": "rack1"}}})
        return plan.make_plan(answers, app.flow.inventory, run=None, controllers=1)

    monkeypatch.setattr(tui.InstallerApp, "run", run)
    assert cli.main(["installer", "tui", "--dry-run", "--inventory", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dry run: the installer would:"
    assert out[1].startswith("  disk: %s (sda" % SDA)
    assert out[-1] == "nothing was written."


def test_on_tty_puts_the_app_on_the_tty_and_gives_it_back(tmp_path):
    master, slave = os.openpty()
    before = [os.fstat(n).st_ino for n in (0, 1, 2)]
    with tuicmd.on_tty(os.ttyname(slave)) as old_stderr:
        assert all(os.isatty(n) and os.ttyname(n) == os.ttyname(slave) for n in (0, 1, 2))
        os.close(old_stderr)
    assert [os.fstat(n).st_ino for n in (0, 1, 2)] == before
    os.close(master)
    os.close(slave)


def test_a_plan_this_machine_refuses_shows_why_and_cannot_be_installed(dell):
    fake = FakeInstall()

    async def script(pilot):
        op = Operator(pilot)
        assert "serial WKD0A1B1, cannot tell whether it holds data" in screen_text(op.app)
        await op.seed_to_summary(disk=SDB)
        text = screen_text(op.app)
        assert "The answers do not make a plan on this machine:" in text
        assert "disk: cannot tell whether %s" % SDB in op.problems()
        assert "Esc goes back to fix it (Target disk)." in op.problems()
        assert op.screen.query_one("#next").disabled
        await op.next()                                 # F10 does not install either
        op.screen.action_next()
        await op.pause()
        assert fake.calls == [] and op.screen.NAME == "summary"

    run_app(tui.InstallerApp(dell, run=Runner({"/dev/sdb": "missing"}), install=fake), script)


def test_without_textual_the_command_says_so(monkeypatch, capsys):
    import sys
    for name in [n for n in sys.modules if n.split(".")[0] == "textual"]:
        monkeypatch.setitem(sys.modules, name, None)        # import textual... fails
    for name in ("tui", "tuicmd"):                         # imported afresh
        monkeypatch.delitem(sys.modules, "rackforge.installer." + name)
        monkeypatch.delattr(sys.modules["rackforge.installer"], name)
    assert cli.main(["installer", "tui", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "rackforge: error: the installer's screens need Textual (no module textual); "
        "install python3-textual, or install from an answer file"]


def test_progress_reaches_the_screen_only_when_what_it_shows_changes():
    """The writer reports each file; the screen is redrawn for each whole percent."""
    class App:
        calls = []

        def call_from_thread(self, func, *args):
            self.calls.append(args)

    app = App()
    console = tui.ScreenConsole(app, type("S", (), {"show_progress": None})())
    for i in range(5001):
        console.progress("verify", i / 5000, None)
    console.progress("copy", 1.0, None)
    assert len(app.calls) == 102
    assert app.calls[0] == ("verify", 0.0) and app.calls[-2] == ("verify", 1.0)
    assert app.calls[-1] == ("copy", 1.0)
