"""Drive diskimage-builder to make the base root file system (a tar).

Only the root file system comes from diskimage-builder: without the ``vm``
element it needs no device-mapper, so it builds on any host (see
TESTBED.md).  The disk, ISO and PXE bundle are assembled afterwards.
"""

import os
import re
import signal
import subprocess
from collections import deque
from pathlib import Path

from rackforge import errors, paths
from rackforge.images import mirrors

# phases run outside the chroot ("Running hooks from .../hooks/root.d") and
# inside it ("dib-run-parts Running /tmp/in_target.d/install.d/01-...")
PHASE_RE = re.compile(r"Running hooks from \S+/hooks/([\w-]+\.d)\b"
                      r"|dib-run-parts Running /tmp/in_target\.d/([\w-]+\.d)/")
SCRIPT_RE = re.compile(r"dib-run-parts Running \S+/([^/\s]+)$")
TAIL_LINES = 3
# diskimage-builder's own housekeeping, which follows a failure and would
# push the lines that explain it out of the error message
NOISE_RE = re.compile(r"^(Unmount |INFO diskimage_builder|dib-run-parts |\+ |Running hooks )")


def dib_version():
    try:
        from importlib.metadata import version
        return version("diskimage-builder")
    except Exception:  # not installed: the host check reports it
        return None


def element_path(extra=()):
    parts = [str(paths.elements_dir()), *map(str, extra)]
    env = os.environ.get("ELEMENTS_PATH")
    if env:
        parts.extend(p for p in env.split(":") if p)
    return ":".join(parts)


def build_env(profile, workdir, version):
    """Environment for one diskimage-builder run (mirrors derived, never written down)."""
    env = dict(os.environ)
    env.update(mirrors.dib_mirror_env())
    env.update({
        "ELEMENTS_PATH": element_path(),
        "DIB_RELEASE": profile.distro.release,
        "DIB_RACKFORGE_VERSION": version,
        "DIB_RACKFORGE_PROFILE": profile.name,
        # keep diskimage-builder's scratch (and its mounts) under our work
        # directory, where the clean-up looks for them
        "TMP_DIR": str(Path(workdir) / "dib-tmp"),
    })
    Path(env["TMP_DIR"]).mkdir(parents=True, exist_ok=True)
    return env


def command(profile, out_base):
    cmd = ["disk-image-create", "-t", "tar", "-o", str(out_base)]
    if profile.packages:
        cmd += ["-p", ",".join(profile.packages)]
    return cmd + list(profile.elements)


def run(profile, workdir, version, log, progress, verbose=False, log_hint=None, extra_env=None):
    """Run diskimage-builder; returns the path of the root tar.

    Every line goes to ``log`` (a text file object); phase changes go to
    ``progress``; with ``verbose`` the raw lines are echoed too.  A failure
    names ``log_hint`` (where the log will be kept), or the log itself.
    """
    out_base = Path(workdir) / "base"
    cmd = command(profile, out_base)
    env = build_env(profile, workdir, version)
    env.update(extra_env or {})
    log.write("+ %s\n" % " ".join(cmd))
    log.flush()
    tail = deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    try:
        for line in proc.stdout:
            log.write(line)
            line = line.rstrip("\n")
            text = line.split(" | ", 1)[-1]
            if text.strip() and not NOISE_RE.match(text):
                tail.append(text)
            if verbose:
                progress.raw(line)
            m = PHASE_RE.search(line)
            if m:
                progress.substep("diskimage-builder %s" % (m.group(1) or m.group(2)))
            m = SCRIPT_RE.search(line)
            if m:
                progress.detail(m.group(1))
        rc = proc.wait()
    except BaseException:
        stop(proc)
        raise
    finally:
        log.flush()
    if rc != 0:
        raise errors.BuildFailed(step="diskimage-builder",
                                 detail="exit %d, last lines: %s" % (rc, " / ".join(tail)),
                                 log=log_hint or log.name)
    tar = Path(str(out_base) + ".tar")
    if not tar.exists():
        raise errors.BuildFailed(step="diskimage-builder", detail="no %s produced" % tar.name,
                                 log=log_hint or log.name)
    return tar


def stop(proc, grace=60):
    """Stop diskimage-builder and give its own traps time to unmount."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
