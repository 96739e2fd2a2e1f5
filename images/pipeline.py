"""``rackforge build PROFILE``: from a profile to ``images/<profile>/``.

Stages::

    preflight   profile, host tools, privileges, free disk: fail before work
    base        diskimage-builder's root tar, or the cached one (images.cache)
    tree        unpack the base, add rackforge's code and a release stamp
    squashfs    the live root (ISO and PXE share it)
    iso         hybrid ISO/USB image
    pxe         kernel, initrd, squashfs, iPXE template
    disk        GPT disk (raw) for BIOS and UEFI
    qcow2       the same disk as qcow2
    manifest    hashes, packages, versions

Everything is made in a hidden work directory beside the final one
(``images/.build-<profile>-XXXX``) and renamed into place only when the last
stage has finished, so an interrupted or failed build leaves the previous
good build untouched and nothing under a final name.  The base, the slow
part, is stored in the cache as soon as diskimage-builder finishes, so a
build interrupted later resumes from there.
"""

import contextlib
import dataclasses
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rackforge import __version__, errors, paths
from rackforge.images import cache as base_cache
from rackforge.images import dib, disk, hosttools, live, manifest, mounts, rootfs, secrets
from rackforge.images import pins as pins_mod

LIVE_OUTPUTS = {"iso", "pxe"}
DISK_OUTPUTS = {"raw", "qcow2"}
ARTIFACT_NAMES = {
    "raw": "{name}.raw",
    "qcow2": "{name}.qcow2",
    "iso": "{name}.iso",
    "pxe": "pxe/ (vmlinuz, initrd, rootfs.squashfs, boot.ipxe.j2)",
}


@dataclass(frozen=True)
class Plan:
    profile: object
    out_dir: Path
    name: str
    stages: tuple
    cache_key: str
    cache_inputs: dict
    pins: dict = None           # {package: version} of a --like manifest
    like: Path = None

    def describe(self):
        """Lines for ``--dry-run``."""
        p = self.profile
        arts = [ARTIFACT_NAMES[out].format(name=self.name) for out in p.outputs]
        return [
            "profile:   %s (%s)" % (p.name, " <- ".join(p.chain)),
            "distro:    %s %s" % (p.distro.name, p.distro.release),
            "elements:  %s" % " ".join(p.elements),
            "packages:  %s" % (" ".join(p.packages) or "(none beyond the elements')"),
            "outputs:   %s" % ", ".join(arts),
            "into:      %s/" % self.out_dir,
            "base key:  %s" % self.cache_key,
            "stages:    %s" % " -> ".join(self.stages),
        ] + (["pinned:    %d packages at the versions of %s" % (len(self.pins), self.like)]
             if self.pins else [])


def make_plan(profile, like=None):
    """The stages of a build of ``profile``; ``like``: an earlier build's manifest whose
    package versions the new build pins (element ``rackforge-pins``)."""
    pins = None
    if like is not None:
        pins = pins_mod.load(like, profile)
        profile = dataclasses.replace(profile, elements=tuple(profile.elements)
                                      + (pins_mod.ELEMENT,))
    outputs = set(profile.outputs)
    stages = ["base", "tree"]
    if outputs & LIVE_OUTPUTS:
        stages.append("squashfs")
    stages += [s for s in ("iso", "pxe") if s in outputs]
    if outputs & DISK_OUTPUTS:
        stages.append("disk")
    if "qcow2" in outputs:
        stages.append("qcow2")
    stages.append("manifest")
    from rackforge.profile import element_search_path
    own = [d for d in element_search_path() if "diskimage_builder" not in str(d)]
    inputs = base_cache.key_inputs(profile, own, dib.dib_version(), __version__)
    if pins:
        inputs["pins"] = base_cache.base_key(pins)
    return Plan(profile=profile, out_dir=paths.images_dir() / profile.name,
                name="rackforge-%s" % profile.name, stages=tuple(stages),
                cache_key=base_cache.base_key(inputs), cache_inputs=inputs, pins=pins,
                like=Path(like) if like else None)


def preflight(plan):
    """Fail fast, before anything is written."""
    if not hosttools.has_privileges():
        raise errors.NotPrivileged(action="building an image")
    hosttools.check_tools(plan.profile.outputs)
    need = plan.profile.build.min_free_gib
    images = paths.images_dir()
    images.mkdir(parents=True, exist_ok=True)
    hosttools.check_free_space(images, need)


STAGE_TITLES = {
    "base": "base root file system (diskimage-builder)",
    "tree": "root tree (rackforge code, release stamp)",
    "squashfs": "live root squashfs",
    "iso": "hybrid ISO / USB image",
    "pxe": "PXE bundle",
    "disk": "GPT disk image (BIOS + UEFI)",
    "qcow2": "qcow2 image",
    "manifest": "manifest",
}


class Build:
    """One run of the pipeline in its own work directory."""

    def __init__(self, plan, progress, use_cache=True, verbose=False):
        self.plan = plan
        self.progress = progress
        self.use_cache = use_cache
        self.verbose = verbose
        self.cache = base_cache.BaseCache(paths.cache_dir())
        self.work = None
        self.out = None
        self.log = None
        self.release = None
        self.base_info = {}
        self.kernel = self.initrd = self.squashfs = None

    # -- driver --------------------------------------------------------
    def run(self):
        images = paths.images_dir()
        self.work = Path(tempfile.mkdtemp(prefix=".build-%s-" % self.plan.profile.name,
                                          dir=images))
        self.out = self.work / "out"
        self.out.mkdir()
        self.log = open(self.out / "build.log", "w", buffering=1)
        self.release = {"version": __version__, "profile": self.plan.profile.name,
                        "built": manifest.utc_now(),
                        "git": manifest.git_revision(paths.source_root())}
        try:
            total = len(self.plan.stages)
            for i, stage in enumerate(self.plan.stages, 1):
                self.progress.stage(i, total, STAGE_TITLES[stage])
                self.log.write("=== stage %s\n" % stage)
                note = getattr(self, "stage_" + stage)()
                self.progress.end_stage(note or "")
            self.log.close()
            return self._publish()
        except BaseException:
            self._fail()
            raise

    def _publish(self):
        final = self.plan.out_dir
        old = None
        if final.exists():
            old = final.with_name(".old-%s-%d" % (final.name, os.getpid()))
            os.rename(final, old)
        os.rename(self.out, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._give_back(final)
        self._cleanup()
        failed = final.with_name(final.name + ".failed.log")
        failed.unlink(missing_ok=True)
        return final

    def _fail(self):
        """Keep the log where the operator can find it; remove everything else.

        A second Ctrl-C during the clean-up would leave mounts behind, so
        interrupts wait until it is finished.
        """
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self._keep_log_and_clean()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _keep_log_and_clean(self):
        self.progress.end_stage("failed")
        failed_log = self.plan.out_dir.with_name(self.plan.out_dir.name + ".failed.log")
        if self.log is not None:
            self.log.close()
            try:
                shutil.copyfile(self.log.name, failed_log)
            except OSError:
                pass
        self._cleanup()

    def _cleanup(self):
        if self.work is None:
            return
        left = mounts.remove_tree(self.work)
        if left:
            self.progress.info("warning: still mounted, not removed: %s" % " ".join(left))

    def _give_back(self, final):
        """Under sudo, hand the outputs to the user who asked for them."""
        uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
        if os.geteuid() == 0 and uid and gid:
            subprocess.run(["chown", "-R", "%s:%s" % (uid, gid), str(final)], check=False)

    def _run(self, cmd, step):
        return self._logged_run(step)(cmd, check=True)

    def _logged_run(self, step):
        """A ``run`` callable for the assembly helpers: logs, and fails with one line."""
        def run(cmd, check=False, capture_output=False, text=False, env=None, **kw):
            res = subprocess.run(list(map(str, cmd)), stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, errors="replace", env=env)
            self.log.write("+ %s\n%s%s" % (" ".join(map(str, cmd)), res.stdout, res.stderr))
            if check and res.returncode != 0:
                last = (res.stderr or res.stdout).strip().splitlines()[-1:]
                detail = last[0] if last else "exit %d" % res.returncode
                raise errors.BuildFailed(step=step, detail=detail, log=self._log_hint())
            return res
        return run

    def _log_hint(self):
        return self.plan.out_dir.with_name(self.plan.out_dir.name + ".failed.log")

    @contextlib.contextmanager
    def _dib_lock(self):
        """One diskimage-builder run at a time: its apt and debootstrap caches are shared."""
        lock_path = paths.cache_dir() / "diskimage-builder.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.progress.substep("waiting for another build's diskimage-builder run")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- stages --------------------------------------------------------
    def stage_base(self):
        key = self.plan.cache_key
        self.base_info = {"key": key, "cached": False}
        tar = self.cache.lookup(key) if self.use_cache else None
        if tar is not None:
            self.base_info["cached"] = True
            self.base_tar = tar
            return "cached base %s" % key[:12]
        extra = {}
        if self.plan.pins:
            pref = self.work / "rackforge-pins.pref"
            pref.write_text(pins_mod.preferences(self.plan.pins))
            extra["DIB_RACKFORGE_PINS"] = str(pref)
        with self._dib_lock():
            tar = dib.run(self.plan.profile, self.work, __version__, self.log, self.progress,
                          verbose=self.verbose, log_hint=self._log_hint(), extra_env=extra)
        self.base_tar = self.cache.store(key, tar, self.plan.cache_inputs)
        return "base %s stored in the cache" % key[:12]

    def stage_tree(self):
        self.root = self.work / "root"
        rootfs.extract(self.base_tar, self.root, run=self._logged_run("unpacking the base"))
        rootfs.install_code(self.root, paths.source_root(), run=self._logged_run(
            "installing rackforge into the image"))
        left = secrets.find(self.root)
        if left:
            raise errors.BuildFailed(
                step="the secrets check", log=self._log_hint(),
                detail="the image would carry %s; remove them in an element's finalise.d "
                       "(see images/secrets.py)" % ", ".join(left))
        rootfs.write_release(self.root, self.release)
        rootfs.write_profile(self.root, self.plan.profile)
        kernel, initrd = rootfs.kernel_and_initrd(self.root)
        self.kernel = self.root / "boot" / kernel
        self.initrd = self.root / "boot" / initrd
        self.packages = rootfs.installed_packages(self.root)
        self.pypi = rootfs.pypi_packages()
        return "%s, %d packages" % (kernel, len(self.packages))

    def stage_squashfs(self):
        rootfs.write_live_fstab(self.root)
        self.squashfs = self.work / "rootfs.squashfs"
        live.make_squashfs(self.root, self.squashfs, run=self._logged_run("mksquashfs"))
        return "%d MiB" % (self.squashfs.stat().st_size >> 20)

    def stage_iso(self):
        iso = self.out / ("%s.iso" % self.plan.name)
        live.make_iso(iso, self.kernel, self.initrd, self.squashfs, self.work, self.release,
                      run=self._logged_run("grub-mkrescue"))
        return "%d MiB" % (iso.stat().st_size >> 20)

    def stage_pxe(self):
        live.make_pxe_bundle(self.out / "pxe", self.kernel, self.initrd, self.squashfs,
                             self.release)

    def stage_disk(self):
        raw = self.out / ("%s.raw" % self.plan.name)
        p = self.plan.profile
        kernel, initrd = self.kernel.name, self.initrd.name

        def grub_cfg(root_uuid):
            return live.render("disk-grub.cfg.j2", timeout=3, kernel=kernel, initrd=initrd,
                               root_uuid=root_uuid, cmdline=live.CONSOLE_ARGS, **self.release)

        self.raw = raw
        disk.build_disk(self.root, raw, self.work, p.disk.esp_mib, p.disk.root_free_mib,
                        grub_cfg, run=self._logged_run("disk assembly"))
        return "%d MiB" % (raw.stat().st_size >> 20)

    def stage_qcow2(self):
        qcow2 = self.out / ("%s.qcow2" % self.plan.name)
        self._run(["qemu-img", "convert", "-O", "qcow2", self.raw, qcow2], "qemu-img convert")
        if "raw" not in self.plan.profile.outputs:
            self.raw.unlink()
        return "%d MiB" % (qcow2.stat().st_size >> 20)

    def stage_manifest(self):
        self.log.flush()
        data = manifest.build_manifest(
            profile=self.plan.profile.as_dict(), version=__version__, git=self.release["git"],
            dib_version=dib.dib_version(), started=self.release["built"],
            finished=manifest.utc_now(),
            base=self.base_info,
            artifacts=manifest.collect_artifacts(self.out, exclude=(manifest.MANIFEST_NAME,
                                                                    "build.log")),
            packages=self.packages, pypi=self.pypi)
        manifest.write_manifest(self.out, data)
        return "%d artifacts" % len(data["artifacts"])
