import io

from rackforge.images.progress import Progress


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_stage_lines_and_durations_in_a_log():
    out, clock = io.StringIO(), Clock()
    p = Progress(stream=out, clock=clock)
    p.stage(1, 2, "base")
    p.substep("diskimage-builder root.d")
    p.substep("diskimage-builder root.d")      # repeated: printed once
    p.detail("75-debian-minimal-baseinstall")  # not a terminal: not printed
    clock.t = 75
    p.stage(2, 2, "tree")
    p.end_stage("3 packages")
    assert out.getvalue().splitlines() == [
        "[1/2] base", "      diskimage-builder root.d", "      done in 1m15s",
        "[2/2] tree", "      done in 0s, 3 packages"]


def test_terminal_rewrites_the_substep_line():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    p = Progress(stream=out, clock=Clock())
    p.stage(1, 1, "base")
    p.substep("a")
    p.detail("x")
    p.end_stage()
    assert "\r\033[K      a: x" in out.getvalue()
    assert out.getvalue().endswith("\n      done in 0s\n")
