"""Textual apps headless for the tests (the installer's TUI, the node's console): a script
driven by Textual's pilot at the Linux console's size, and the text the screen shows."""

import asyncio

from textual import events


def run_app(app, script, settle=None):
    """Run ``script(pilot)`` against ``app`` at 80x25, the Linux console's size, after
    a first pause (and ``settle(app)``, awaited, when given: e.g. the app's workers)."""
    async def go():
        async with app.run_test(size=(80, 25)) as pilot:
            if settle is not None:
                await settle(app)
            await pilot.pause()
            await script(pilot)
    asyncio.run(go())
    return app


def screen_text(app):
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


class Keys:
    """Keys as the person at the console presses them (the console's widgets are the
    installer's: ``installer/tui.py``)."""

    def __init__(self, pilot):
        self.pilot, self.app = pilot, pilot.app

    @property
    def screen(self):
        return self.app.screen

    async def pause(self):
        await self.pilot.pause()

    async def choose(self, list_id, key):
        """Move to ``key`` in the list with the arrow keys and press Enter."""
        from rackforge.installer import tui
        box = self.screen.query_one("#" + list_id, tui.ChoiceList)
        box.focus()
        await self.pilot.press("home")
        for _ in range(box.get_option_index(key)):
            await self.pilot.press("down")
        await self.pilot.press("enter")

    async def type(self, input_id, text, keys=False):
        """Empty the field (End, Ctrl-U), then paste ``text`` into it, or type it key by
        key (slower: a pilot's key press waits for the screen)."""
        from rackforge.installer import tui
        box = self.screen.query_one("#" + input_id, tui.ConsoleInput)
        box.focus()
        if box.value:
            await self.pilot.press("end", "ctrl+u")
        if keys:
            await self.pilot.press(*text)
        elif text:
            box.post_message(events.Paste(text))
            await self.pause()

    def problems(self):
        return str(self.screen.query_one("#problems").render())
