"""Textual apps headless for the tests (the installer's TUI, the node's console): a script
driven by Textual's pilot at the Linux console's size, and the text the screen shows."""

import asyncio


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
