"""``python3 serialrelay.py SOCKET [TRACE]``: this terminal <-> a QEMU serial port on a
unix socket.

Run in the tmux pane of :mod:`serialconsole`: the terminal in raw mode, every byte
typed goes to the guest's serial port and every byte from it to the terminal,
until QEMU closes the socket.  With ``TRACE``, each chunk is also written there
with its time and direction (``>`` typed, ``<`` from the guest): when a key was
sent and when the guest answered it.
"""

import os
import select
import socket
import sys
import termios
import time
import tty


def tracer(path):
    """A function that records one chunk of the line (or does nothing without ``path``)."""
    if path is None:
        return lambda direction, data: None
    out = open(path, "a", buffering=1)
    start = time.monotonic()

    def record(direction, data):
        elapsed = time.monotonic() - start
        out.write("%9.3f %s %5d %r\n" % (elapsed, direction, len(data), data[:120]))
    return record


def main(path, trace=None, wait=60.0):
    record = tracer(trace)
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        while True:
            ready, _, _ = select.select([fd, sock], [], [])
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return 0
                record("<", data)
                os.write(sys.stdout.fileno(), data)
            if fd in ready:
                data = os.read(fd, 4096)
                if not data:
                    return 0
                record(">", data)
                sock.sendall(data)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
