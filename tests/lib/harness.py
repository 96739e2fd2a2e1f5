"""Helpers shared by the integration and end-to-end tests."""

import os
import subprocess
import sys


def rackforge(*args, env=None, timeout=120, **kwargs):
    """Run the real command line as an operator would."""
    return subprocess.run([sys.executable, "-m", "rackforge", *map(str, args)],
                          env=env, timeout=timeout, capture_output=True, text=True, **kwargs)


def mounts_below(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def loop_devices_on(path):
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if os.path.realpath(path) in line]
