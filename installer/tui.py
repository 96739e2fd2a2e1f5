"""The installer's screens (Textual): widgets only; the logic is in ``tuimodel.py``.

``rackforge installer tui`` on tty1 and the serial console when no answer
file was found (``rackforge-installer-tui@.service``).  Six screens, in the
order of ``tuimodel.STEPS``: target disk, management network, cluster, host
name, root's SSH key, then the plan (``InstallPlan.summary()``) and the
final confirmation.  Each screen hands what was typed to the model on Next
and shows the model's problem lines under its fields; Back keeps what was
typed (the screens stay installed).  Nothing is written before the
confirmation; then ``installer.run.install(plan, console, cmdline)`` runs in a
worker thread and posts its progress here.

Made for the Linux console: keyboard only (Tab, arrows, Enter, Space, Esc,
F10), 16 ANSI colours (the ``textual-ansi`` theme and ANSI colour names
only), no borders but ASCII, no glyph a console font lacks (choices are
``(*)``/``[x]``, a password is ``*``, progress is ``[####....]``), no mouse,
no header icon or footer glyphs: the keys are one line of plain text.
"""

import functools
import logging
import subprocess

from rich.text import Text
from textual.app import App
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.scrollbar import ScrollBarRender
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from rackforge import errors
from rackforge.installer import run as run_mod
from rackforge.installer import tuimodel
from rackforge.installer.tuimodel import STEPS

LOG = logging.getLogger(__name__)
KEYS = "Tab: move  Up/Down, Enter: choose  F10: next  Esc: back  Ctrl-Q: quit"
LAST_LINES = 6          # the writer's lines kept on the progress screen

CSS = """
Screen { background: ansi_default; color: ansi_default; }
#title, #keys { height: 1; background: ansi_blue; color: ansi_bright_white; padding: 0 1; }
#title { text-style: bold; }
#body { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1;
        scrollbar-background: ansi_default; scrollbar-color: ansi_blue; }
.heading { margin-top: 1; color: ansi_bright_white; text-style: bold; }
.hint { color: ansi_default; }
.row { height: 1; }
.row Label { width: 16; }
Input, Input:focus, Input.-invalid, Input.-invalid:focus, Input:ansi {
    border: none; height: 1; padding: 0 1; width: 1fr;
    background: ansi_blue; color: ansi_bright_white; }
Input:focus, Input:ansi:focus { background: ansi_cyan; color: ansi_black; }
ChoiceList, ChoiceList:focus { border: none; padding: 0; height: auto; max-height: 14;
    background: ansi_default; color: ansi_default; }
ChoiceList > .option-list--option-highlighted {
    background: ansi_default; color: ansi_default; text-style: none; }
ChoiceList:focus > .option-list--option-highlighted {
    background: ansi_cyan; color: ansi_black; text-style: none; }
ChoiceList > .option-list--option-disabled { color: ansi_bright_black; }
#disks { height: 1fr; max-height: 100%; }
#static, #create, #join, #confirm { height: auto; }
#problems { height: auto; max-height: 8; padding: 0 1; color: ansi_bright_red; }
#buttons { height: 1; align-horizontal: right; }
Button, Button:focus, Button:hover, Button.-active {
    border: none; height: 1; min-width: 12; margin-left: 2; padding: 0;
    background: ansi_default; color: ansi_default; text-style: bold;
    tint: transparent; background-tint: transparent; }
Button:focus { background: ansi_cyan; color: ansi_black; }
Button:disabled { color: ansi_bright_black; text-style: none; opacity: 100%;
    text-opacity: 100%; }
#result { margin-top: 1; text-style: bold; }
#result.failed { color: ansi_bright_red; }
"""


class ConsoleScrollBarRender(ScrollBarRender):
    """A scroll bar in colour alone: Textual's eighths-of-a-cell glyphs are not in a
    console font."""
    VERTICAL_BARS = [" "] * 8
    HORIZONTAL_BARS = [" "] * 8


class ConsoleScrollBars:
    """Mixin: this widget's vertical scroll bar is drawn by ConsoleScrollBarRender."""

    @property
    def vertical_scrollbar(self):
        bar = super().vertical_scrollbar
        bar.renderer = ConsoleScrollBarRender
        return bar


class Body(ConsoleScrollBars, VerticalScroll, can_focus=False):
    """A step's fields, scrolled when they do not fit (the fields take the focus)."""


def text(lines):
    """Plain text (no markup: disk models and problem lines may hold brackets)."""
    return Text("\n".join(lines) if isinstance(lines, (list, tuple)) else lines)


class ConsoleInput(Input):
    """An input line whose password mask is ``*`` (Textual's bullet is not in a console
    font), which puts the cursor at the end on focus instead of selecting all, and whose
    cursor does not blink: a blink redraws the line twice a second for as long as the
    field has the focus, traffic for nothing on a serial console (a BMC's, at 115200
    baud or less)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("select_on_focus", False)
        super().__init__(*args, **kwargs)
        self.set_reactive(Input.cursor_blink, False)

    def _on_focus(self, event):
        super()._on_focus(event)
        self.cursor_position = len(self.value)      # Ctrl-U then empties the whole field

    @property
    def _value(self):
        if self.password:
            return Text("*" * len(self.value), no_wrap=True, overflow="ignore", end="")
        return super()._value


class ChoiceList(ConsoleScrollBars, OptionList):
    """Options chosen with Enter or Space and marked ``(*)`` (one) or ``[x]`` (several);
    a disabled option is shown but can be neither highlighted nor chosen."""

    BINDINGS = [Binding("space", "select", "choose", show=False)]

    class Changed(Message):
        def __init__(self, choice_list):
            super().__init__()
            self.choice_list = choice_list

    def __init__(self, items, chosen=(), multiple=False, **kwargs):
        """``items``: ``[(key, [lines], enabled)]``; ``chosen``: the keys chosen now."""
        self.items = list(items)
        self.multiple = multiple
        self.chosen = list(chosen)
        super().__init__(*[Option(self._prompt(k, lines, enabled), id=k, disabled=not enabled)
                           for k, lines, enabled in self.items], **kwargs)

    def _prompt(self, key, lines, enabled=True):
        on = key in self.chosen
        mark = ("[x]" if on else "[ ]") if self.multiple else ("(*)" if on else "( )")
        mark = mark if enabled else " - "
        return text([mark + " " + lines[0]] + ["    " + line for line in lines[1:]])

    def on_mount(self):
        keys = [k for k, _, enabled in self.items if enabled]
        first = next((k for k in keys if k in self.chosen), keys[0] if keys else None)
        if first is not None:
            self.highlighted = self.get_option_index(first)

    def choose(self, key):
        """Choose ``key`` (one list) or turn it on or off (several); refused if disabled."""
        if self.get_option(key).disabled:
            return
        if self.multiple:
            self.chosen = [k for k in self.chosen if k != key] + (
                [] if key in self.chosen else [key])
        else:
            self.chosen = [key]
        for i, (k, lines, enabled) in enumerate(self.items):
            self.replace_option_prompt_at_index(i, self._prompt(k, lines, enabled))
        self.post_message(self.Changed(self))

    def action_select(self):
        if self.highlighted is not None:
            self.choose(self.get_option_at_index(self.highlighted).id)

    @property
    def value(self):
        return self.chosen[0] if self.chosen else None


def field_row(label, input_id, placeholder="", password=False):
    return Horizontal(Label(label), ConsoleInput(id=input_id, placeholder=placeholder,
                                                 password=password), classes="row")


# -- the step screens ------------------------------------------------------------------
class StepScreen(Screen):
    """Title, the step's fields, the model's problem lines, Back/Next, the keys line."""

    BINDINGS = [Binding("escape", "back", "back", show=False),
                Binding("f10", "next", "next", show=False)]
    NAME = None
    NEXT = "< Next >"
    BODY = Body
    KEYS = KEYS

    @property
    def step(self):
        return next(s for s in STEPS if s.name == self.NAME)

    @property
    def flow(self):
        return self.app.flow

    def compose(self):
        number = STEPS.index(self.step) + 1
        title = "rackforge installer  %d/%d  %s" % (number, len(STEPS), self.step.title)
        if self.app.dry_run:
            title += "  (dry run)"
        yield Static(text(title), id="title")
        with self.BODY(id="body"):
            yield from self.fields()
        yield Static("", id="problems")
        with Horizontal(id="buttons"):
            yield Button("< Back >", id="back", disabled=number == 1)
            yield Button(self.NEXT, id="next")
        yield Static(text(self.KEYS), id="keys")

    def fields(self):
        return []

    def submit(self):
        """Hand the fields to the model: its problems."""
        return []

    def show_problems(self, lines):
        self.query_one("#problems", Static).update(text([str(x) for x in lines]))

    def action_next(self):
        problems = self.submit()
        self.show_problems(self.flow.shown(p) for p in problems)
        if not problems:
            self.app.go(self.step, +1)

    def action_back(self):
        self.app.go(self.step, -1)

    def on_button_pressed(self, event):
        {"back": self.action_back, "next": self.action_next}[event.button.id]()

    def on_input_submitted(self, event):
        """Enter in a field: the next field, or Next after the last one."""
        shown = [i for i in self.query(ConsoleInput) if self.is_shown(i)]
        if shown and event.input is shown[-1]:
            self.action_next()
        else:
            self.focus_next()

    def is_shown(self, widget):
        while widget is not None and widget is not self:
            if not widget.display:
                return False
            widget = widget.parent
        return True

    def value(self, input_id):
        return self.query_one("#" + input_id, ConsoleInput).value


class DiskScreen(StepScreen):
    NAME = "disk"
    BODY = Vertical             # the list scrolls itself

    def fields(self):
        yield Static(text("The disk to install to (Enter chooses it): everything on it is "
                          "replaced. A disk that HOLDS DATA is wiped, once you type its id "
                          "to confirm."), classes="heading")
        yield ChoiceList([(str(i), row.lines(), row.choosable)
                          for i, row in enumerate(self.flow.disks)], id="disks")

    def submit(self):
        key = self.query_one("#disks", ChoiceList).value
        return self.flow.submit_disk(None if key is None else self.flow.disks[int(key)])


class NetworkScreen(StepScreen):
    NAME = "network"

    def fields(self):
        nics = [(n.name, [n.line()], True) for n in self.flow.nics]
        yield Static(text("The NIC on the management network:"), classes="heading")
        yield ChoiceList(nics, chosen=[self.flow.default_nic()], id="nic")
        yield Static(text("Its address:"), classes="heading")
        yield ChoiceList([("static", ["static (the seed needs one)"], True),
                          ("dhcp", ["DHCP"], True)], chosen=["static"], id="mode")
        with Vertical(id="static"):
            yield field_row("Address/prefix", "address", "10.0.0.11/24")
            yield field_row("Gateway", "gateway", "10.0.0.1 (optional)")
        yield field_row("VLAN id", "vlan", "none (optional: 1-4094)")
        if self.flow.can_bond:
            yield Static(text("Bond it with (optional; Space marks a NIC):"),
                         classes="heading")
            yield ChoiceList(nics, multiple=True, id="bond")
            yield Static(text("Bond mode (802.3ad needs LACP on the switch):"))
            yield ChoiceList([(m, [m], True) for m in tuimodel.BOND_MODES],
                             chosen=[tuimodel.BOND_MODES[0]], id="bond-mode")

    def on_choice_list_changed(self, event):
        if event.choice_list.id == "mode":
            self.query_one("#static").display = event.choice_list.value == "static"

    def submit(self):
        bonded = self.query("#bond")
        return self.flow.submit_network(tuimodel.NetworkFields(
            nic=self.query_one("#nic", ChoiceList).value,
            dhcp=self.query_one("#mode", ChoiceList).value == "dhcp",
            address=self.value("address"), gateway=self.value("gateway"),
            vlan=self.value("vlan"),
            bond_with=list(bonded.first().chosen) if bonded else [],
            bond_mode=self.query_one("#bond-mode", ChoiceList).value if bonded
            else tuimodel.BOND_MODES[0]))


class ClusterScreen(StepScreen):
    NAME = "cluster"

    def fields(self):
        yield ChoiceList([
            ("create", ["create a new cluster (this node is the first: the seed)"], True),
            ("join", ["join a cluster (rackforge cluster token create, on a controller)"],
             True)], chosen=["create"], id="mode")
        with Vertical(id="create"):
            yield field_row("Cluster name", "name", "rack1")
            yield field_row("VIP", "vip", "10.0.0.100 (optional: the cloud API's address)")
        with Vertical(id="join"):
            yield field_row("Endpoints", "endpoints", "https://10.0.0.11:9443")
            yield field_row("Join token", "token", "ID.SECRET (not shown)", password=True)
            yield field_row("CA hash", "ca_sha256", "sha256:...")

    def on_mount(self):
        self.query_one("#join").display = False

    def on_choice_list_changed(self, event):
        join = event.choice_list.value == "join"
        self.query_one("#join").display = join
        self.query_one("#create").display = not join

    def submit(self):
        return self.flow.submit_cluster(tuimodel.ClusterFields(
            mode=self.query_one("#mode", ChoiceList).value, name=self.value("name"),
            vip=self.value("vip"), endpoints=self.value("endpoints"),
            token=self.value("token"), ca_sha256=self.value("ca_sha256")))


class HostnameScreen(StepScreen):
    NAME = "hostname"

    def fields(self):
        yield field_row("Host name", "hostname", "node1")
        yield Static(text("This node's name: 1 to 63 letters, digits and '-'."),
                     classes="hint")

    def submit(self):
        return self.flow.submit_hostname(self.value("hostname"))


class SshScreen(StepScreen):
    NAME = "ssh"

    def fields(self):
        yield field_row("Public key", "key", "ssh-ed25519 AAAA... you@laptop")
        yield Static(text("Optional: paste one line (~/.ssh/id_ed25519.pub) for root's "
                          "authorized_keys; leave it empty for none."), classes="hint")

    def submit(self):
        return self.flow.submit_ssh_key(self.value("key"))


class SummaryScreen(StepScreen):
    """The plan, made again each time the screen is shown; Install after confirmation."""

    NAME = "summary"
    NEXT = "< Install >"
    KEYS = "Tab: move  Enter: press the button  Esc: back  Ctrl-Q: quit"
    BINDINGS = [Binding("f10", "noop", show=False)]     # installing takes the button
    plan = None

    def fields(self):
        yield Static("", id="plan")
        with Vertical(id="confirm"):
            yield Static("", id="confirm-text", classes="heading")
            yield field_row("Confirm", "typed", "the disk's id, or wipe")

    def on_screen_resume(self):
        self.plan, found = self.flow.plan()
        problems = errors.capped(self.flow.shown(p) for p in found)
        if self.plan is None:
            steps = dict.fromkeys(tuimodel.step_of(p.key).title for p in found)
            problems.append("Esc goes back to fix it (%s)." % ", ".join(steps))
            lines = ["The answers do not make a plan on this machine:"]
        else:
            lines = ["The installer will:"] + ["  " + line for line in self.plan.summary()]
            if self.app.dry_run:
                lines.append("Dry run: Install shows the plan and writes nothing.")
        self.query_one("#plan", Static).update(text(lines))
        wipe = self.plan is not None and tuimodel.needs_typed_confirmation(self.plan)
        self.query_one("#confirm").display = wipe
        if wipe:
            self.query_one("#confirm-text", Static).update(text(
                "%s holds data (%s). Type its id %s or the word %s to erase it:" % (
                    self.plan.disk.name, ", ".join(self.plan.signatures),
                    self.plan.disk.stable_id, tuimodel.CONFIRM_WORD)))
        self.query_one("#next", Button).disabled = self.plan is None
        self.show_problems(problems)
        self.query_one("#typed" if wipe else "#back").focus()

    def action_noop(self):
        pass

    def submit(self):
        if self.plan is None:
            return ["there is no plan to install; Esc goes back"]
        problem = tuimodel.confirmation_problem(self.plan, self.value("typed"))
        return [problem] if problem else []

    def action_next(self):
        problems = self.submit()
        self.show_problems(problems)
        if not problems:
            self.app.confirmed(self.plan)


SCREENS = (DiskScreen, NetworkScreen, ClusterScreen, HostnameScreen, SshScreen, SummaryScreen)


# -- installing ----------------------------------------------------------------------------
class ProgressScreen(Screen):
    """The writer's steps, its last lines, then installed (and the reboot) or FAILED."""

    NAME = "progress"

    BINDINGS = [Binding("escape", "back", "back", show=False)]

    def __init__(self, plan):
        super().__init__()
        self.plan = plan
        self.progress = tuimodel.Progress()
        self.lines = []
        self.failed_at = None
        self.left = self.timer = None

    def compose(self):
        d = self.plan.disk
        yield Static(text("rackforge installer: installing to %s (%s)" % (
            d.stable_id, d.name or d.path)), id="title")
        with Body(id="body"):
            yield Static(text(self.progress.rows()), id="steps")
            yield Static("", id="lines")
            yield Static("", id="result")
        yield Static(text("Installing: do not power off."), id="keys")

    def show_progress(self, step, fraction):
        """A step's fraction (its lines, "copy ..." and "copy done", are the rows)."""
        self.progress.update(step, fraction)
        self.query_one("#steps", Static).update(text(self.progress.rows()))

    def add_line(self, line):
        self.lines = (self.lines + [errors.printable(line)])[-LAST_LINES:]
        self.query_one("#lines", Static).update(text(self.lines))

    def installed(self, seconds):
        self.head = "installed to %s (%s) in %.0f s" % (
            self.plan.disk.path, self.plan.disk.stable_id, seconds)
        self.query_one("#keys", Static).update(text("Installed: rebooting."))
        self.left = self.app.reboot_after
        self.timer = self.set_interval(1, self.tick) if self.left > 0 else None
        self.tick()

    def tick(self):
        """The countdown, then the reboot (once)."""
        if self.left is None:
            return
        result = self.query_one("#result", Static)
        if self.left > 0:
            result.update(text("%s; rebooting in %d s" % (self.head, self.left)))
            self.left -= 1
            return
        result.update(text("%s; rebooting now" % self.head))
        self.left = None
        if self.timer is not None:
            self.timer.stop()
        self.app.reboot()

    def failed(self, message):
        self.failed_at = message
        result = self.query_one("#result", Static)
        result.add_class("failed")
        result.update(text(["FAILED: %s" % message,
                            "the detail is in %s; nothing boots from a half-written disk"
                            % run_mod.LOG_FILE]))
        self.query_one("#keys", Static).update(text("Esc: back to the summary  Ctrl-Q: quit"))

    def action_back(self):
        if self.failed_at is not None:
            self.app.pop_screen()


class ScreenConsole:
    """``run.Console``'s two calls for ``install()``, from the worker thread: onto the
    progress screen and into the log (not onto the ttys: another console's TUI is there).

    Progress reaches the screen only when what it shows changes (a step's whole
    percent): the writer reports every file it copies or verifies, and each report
    waits for the app (``call_from_thread``) and redraws the screen, which on a slow
    CPU and a serial console cost more than the hashing (the TUI's verify took
    minutes longer than the answer file's)."""

    def __init__(self, app, screen):
        self.app, self.screen = app, screen
        self.shown = {}         # step -> the whole percent on the screen

    def line(self, line):
        LOG.info("%s", line)
        self.app.call_from_thread(self.screen.add_line, line)

    def progress(self, step, fraction, line):
        if line:
            LOG.info("%s", line)
        percent = int(max(0.0, min(1.0, fraction)) * 100)
        if self.shown.get(step) == percent:
            return
        self.shown[step] = percent
        self.app.call_from_thread(self.screen.show_progress, step, fraction)


def systemctl_reboot():
    subprocess.run(["systemctl", "reboot"], check=False)


class InstallerApp(App):
    """The screens over one :class:`tuimodel.Flow`.

    :param install: ``install(plan, console, cmdline)``, run in a worker thread after
        the confirmation (``installer.run.install``); never called on a dry run, which
        exits with the plan instead.
    :param reboot: called ``reboot_after`` seconds after a good install.
    """

    CSS = CSS
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+q", "leave", "quit", show=False, priority=True),
                Binding("ctrl+c", "leave", "quit", show=False, priority=True)]

    def __init__(self, inventory, run=None, dry_run=False, install=run_mod.install,
                 cmdline="", reboot=systemctl_reboot, reboot_after=10):
        super().__init__(ansi_color=True)
        self.flow = tuimodel.Flow(inventory, run)
        self.dry_run = dry_run
        self.install = install
        self.cmdline = cmdline
        self.reboot = reboot
        self.reboot_after = reboot_after
        self.installing = False
        self.installed = False

    def on_mount(self):
        self.theme = "textual-ansi"
        for screen in SCREENS:
            self.install_screen(screen(), screen.NAME)
        self.push_screen(STEPS[0].name)

    def go(self, step, delta):
        index = STEPS.index(step) + delta
        if 0 <= index < len(STEPS):
            self.switch_screen(STEPS[index].name)

    def confirmed(self, plan):
        """The operator confirmed ``plan``: a dry run exits with it, else install it."""
        if self.dry_run:
            self.exit(plan)
            return
        screen = ProgressScreen(plan)
        self.push_screen(screen)
        self.installing = True
        self.run_worker(functools.partial(self._install, plan, screen), name="install",
                        thread=True, exit_on_error=False)

    def _install(self, plan, screen):
        """The worker thread: the writer, then the result onto the screen."""
        console = ScreenConsole(self, screen)
        try:
            seconds = self.install(plan, console, self.cmdline)
        except errors.RackforgeError as exc:
            LOG.error("install failed: %s", exc)
            self.call_from_thread(self._finished, False, screen.failed, str(exc))
        except Exception as exc:        # noqa: BLE001 - a bug: one line, the detail logged
            LOG.exception("install failed")
            self.call_from_thread(self._finished, False, screen.failed,
                                  "unexpected error: %s" % str(exc)[:200])
        else:
            self.call_from_thread(self._finished, True, screen.installed, seconds)

    def _finished(self, ok, show, detail):
        self.installing = False
        self.installed = ok
        show(detail)

    def action_leave(self):
        if self.installing:
            self.screen.add_line("the install is running and cannot be stopped safely; "
                                 "wait for it")
        elif self.installed:
            self.screen.add_line("installed: the machine reboots into it")
        else:
            self.exit(None)
