"""Child processes: stopping one politely, then firmly."""

import subprocess


def stop_process(proc, timeout=10):
    """SIGTERM ``proc`` (a Popen), wait up to ``timeout`` s, then SIGKILL; returns its status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
