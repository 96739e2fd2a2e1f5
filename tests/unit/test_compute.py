"""nova-compute as the node agent runs it: a working KVM detected (not assumed from
/dev/kvm), the files it renders, the libvirt secrets defined and set without a key in
any command line, the units in order, and the check."""

import configparser
import os
import stat
import subprocess

import pytest
from fakesystemd import FakeSystemd

from rackforge.nodeagent import catalogue, compute, health, hooks, keyring, kvm, render
from rackforge.nodeagent.reconcile import StepContext
from rackforge.nodeagent.view import Peer, View

CONTROLLERS = [Peer("n1", "node1", "10.0.0.11", 0), Peer("n2", "node2", "10.0.0.12", 1),
               Peer("n3", "node3", "10.0.0.13", 2)]
UNITS = ["virtlogd.socket", "libvirtd.service", "nova-compute.service"]


def secrets():
    cat = catalogue.load(**hooks.names())
    return {name: keyring.generate(s).decode() for name, s in cat.secrets.items()}


def view(kvm_works=False, container=""):
    me = Peer("n4", "node4", "10.0.0.14")
    v = View(node_id="n4", name="node4", address="10.0.0.14", roles={"compute"},
             state="active", cluster={"name": "rack", "vip": "10.0.0.100"},
             controllers=CONTROLLERS, nodes=CONTROLLERS + [me],
             facts={"interface": "eth0", "prefix": 24, "cpus": 4, "memory_mib": 16384,
                    "kvm": kvm_works, "container": container},
             settings={"provider": {}, "openstack": {"workers": 1, "api_processes": 1,
                                                     "api_threads": 1}, "ceph": {}})
    return v


def context(v, values):
    ctx = v.context(values)
    # view.py is to pass these two facts on as node.kvm and node.container
    ctx["node"].update(kvm=v.facts["kvm"], container=v.facts["container"])
    return ctx


def rendered(v, values=None):
    cat = catalogue.load(**hooks.names())
    ctx = context(v, values or secrets())
    env = render.environment()
    return {c.path: render.render(env, c, ctx) for c in cat.by_name["nova-compute"].configs}


def ini(text):
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.read_string(text)
    return parser


# -- KVM: a guest kernel must print, /dev/kvm alone proves nothing ---------------------------
class Qemu:
    """QEMU as subprocess.run: prints ``out`` and exits, or hangs until the timeout."""

    def __init__(self, out=b"", rc=0, hang=False, err=b""):
        self.out, self.rc, self.hang, self.err, self.calls = out, rc, hang, err, []

    def __call__(self, argv, **kw):
        self.calls.append((list(argv), kw))
        if argv[0] == "systemd-detect-virt":
            return subprocess.CompletedProcess(argv, 1, "none\n", "")
        if self.hang:
            raise subprocess.TimeoutExpired(argv, kw["timeout"], output=self.out)
        return subprocess.CompletedProcess(argv, self.rc, self.out, self.err)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A /dev/kvm that opens, a CPU with vmx and a kernel in /boot."""
    monkeypatch.setattr(kvm, "device_usable", lambda path=kvm.DEVICE: (True, ""))
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu vme vmx sse2\n")
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/vmlinuz-6.12.118+deb13-amd64").write_bytes(b"MZ")
    return dict(cpuinfo=str(tmp_path / "cpuinfo"), kernels=(str(tmp_path / "boot/vmlinuz-*"),))


def test_kvm_counts_when_a_guest_kernel_prints_under_it(machine):
    qemu = Qemu(out=b"[    0.000000] Linux version 6.12.118+deb13-amd64 ...\nKernel panic")
    assert kvm.detect(qemu, **machine) == (True, "")
    argv, kw = qemu.calls[0]
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "kvm"]
    assert "-no-reboot" in argv and argv[argv.index("-kernel") + 1].endswith("deb13-amd64")
    assert "console=ttyS0" in argv[argv.index("-append") + 1]
    assert kw["timeout"] == kvm.TIMEOUT


def test_a_guest_that_hangs_under_nested_kvm_means_software_emulation(machine, caplog):
    works, why = kvm.detect(Qemu(hang=True), **machine)
    assert not works and "printed nothing in 20s" in why
    # slow but alive: the banner seen before the timeout counts
    assert kvm.detect(Qemu(hang=True, out=b"Linux version 6.12"), **machine) == (True, "")
    works, why = kvm.detect(Qemu(rc=1, err=b"qemu: could not access KVM kernel module"),
                            **machine)
    assert not works and "could not access KVM" in why
    with caplog.at_level("WARNING"):
        assert kvm.facts(Qemu(hang=True), **machine) == {"kvm": False, "container": ""}
    assert "virt_type qemu" in caplog.text


def test_no_device_no_flag_or_no_kernel_runs_no_qemu(machine, monkeypatch, tmp_path):
    qemu = Qemu(out=b"Linux version")
    monkeypatch.setattr(kvm, "device_usable", lambda path=kvm.DEVICE: (False, "/dev/kvm is "
                                                                       "missing"))
    assert kvm.detect(qemu, **machine) == (False, "/dev/kvm is missing")
    monkeypatch.setattr(kvm, "device_usable", lambda path=kvm.DEVICE: (True, ""))
    (tmp_path / "plain").write_text("flags\t: fpu sse2\n")
    assert kvm.detect(qemu, **dict(machine, cpuinfo=str(tmp_path / "plain")))[0] is False
    assert kvm.detect(qemu, **dict(machine, kernels=(str(tmp_path / "none-*"),))) == (
        False, "no kernel in /boot to test KVM with")
    assert qemu.calls == []


def test_device_check_and_container(tmp_path):
    assert kvm.device_usable(str(tmp_path / "kvm")) == (False, "%s is missing"
                                                        % (tmp_path / "kvm"))
    (tmp_path / "file").write_text("")
    assert "not a character device" in kvm.device_usable(str(tmp_path / "file"))[1]

    def detect_virt(out, rc):
        return lambda argv, **kw: subprocess.CompletedProcess(argv, rc, out, "")
    assert kvm.container(detect_virt("systemd-nspawn\n", 0)) == "systemd-nspawn"
    assert kvm.container(detect_virt("none\n", 1)) == ""


# -- the files ----------------------------------------------------------------------------------
def test_nova_compute_uses_rbd_in_vms_and_kvm_only_where_it_works():
    values = secrets()
    files = rendered(view(kvm_works=True), values)
    conf = ini(files["/etc/nova/nova-compute.conf"])
    assert conf["DEFAULT"]["compute_driver"] == "libvirt.LibvirtDriver"
    lv = conf["libvirt"]
    assert lv["virt_type"] == "kvm"
    assert (lv["images_type"], lv["images_rbd_pool"], lv["images_rbd_ceph_conf"]) == (
        "rbd", "vms", "/etc/ceph/ceph.conf")
    assert (lv["rbd_user"], lv["rbd_secret_uuid"]) == ("nova", values["ceph-libvirt-nova"])
    assert lv["disk_cachemodes"] == "network=writeback"
    assert conf["os_vif_ovs"]["ovsdb_connection"] == "tcp:127.0.0.1:6640"
    assert ini(rendered(view())["/etc/nova/nova-compute.conf"])["libvirt"]["virt_type"] == "qemu"
    # the chassis' hostname (ovn.py: the node's name) is nova's host, for port binding
    assert ini(files["/etc/nova/nova-compute-node.conf"])["DEFAULT"]["host"] == "node4"
    cat = catalogue.load(**hooks.names())
    modes = {c.path: (c.mode, c.group) for c in cat.by_name["nova-compute"].configs}
    assert modes["/etc/nova/nova-compute-node.conf"] == (0o640, "nova")
    assert modes["/etc/libvirt/qemu.conf"] == (0o600, "root")


def test_qemu_conf_keeps_debians_defaults_on_bare_metal_and_fits_a_container():
    bare = rendered(view())["/etc/libvirt/qemu.conf"]
    assert not [line for line in bare.splitlines() if line and not line.startswith("#")]
    inside = rendered(view(container="systemd-nspawn"))["/etc/libvirt/qemu.conf"]
    assert "cgroup_controllers = [ ]\n" in inside and 'security_driver = "none"\n' in inside


def test_the_record_requires_the_keys_and_the_chassis():
    svc = catalogue.load(**hooks.names()).by_name["nova-compute"]
    assert list(svc.units) == UNITS and svc.roles == ("compute",)
    assert {"ceph-client", "ovn-controller"} <= set(svc.requires)
    assert {"rabbitmq-openstack", "nova-keystone", "metadata-secret", "ceph-nova-key",
            "ceph-cinder-key", "ceph-libvirt-nova", "ceph-libvirt-cinder"} <= set(svc.secrets)


# -- the step: libvirt, its secrets, nova-compute --------------------------------------------
class Virsh:
    """virsh over libvirt's secrets in memory; records each call, and the mode of any file
    it was handed (then gone: the test looks after the step)."""

    def __init__(self):
        self.defined, self.values, self.calls, self.files = {}, {}, [], []

    def __call__(self, argv, input=None, **kw):
        self.calls.append(list(argv))
        args = argv[3:]
        if "--file" in args:
            path = args[args.index("--file") + 1]
            self.files.append((path, stat.S_IMODE(os.stat(path).st_mode)))
            text = open(path).read()
        if args[0] == "secret-dumpxml":
            if args[1] not in self.defined:
                return subprocess.CompletedProcess(argv, 1, "", "error: Secret not found")
            return subprocess.CompletedProcess(argv, 0, self.defined[args[1]], "")
        if args[0] == "secret-define":
            uuid = text.split("<uuid>")[1].split("</uuid>")[0]
            self.defined[uuid] = text
        if args[0] == "secret-set-value":
            self.values[args[2]] = text
        if args[0] == "secret-get-value":
            if args[1] not in self.values:
                return subprocess.CompletedProcess(argv, 1, "", "error: no value")
            return subprocess.CompletedProcess(argv, 0, self.values[args[1]] + "\n", "")
        return subprocess.CompletedProcess(argv, 0, "", "")


def step_ctx(systemd, values, changed=False, dry_run=False):
    svc = catalogue.load(**hooks.names()).by_name["nova-compute"]
    v = view()
    return StepContext(service=svc, view=v, systemd=systemd, kv=None, tasks=None,
                       changed=changed, dry_run=dry_run, context=context(v, values))


def test_libvirt_first_then_its_secrets_then_nova_and_no_key_in_any_argv(tmp_path):
    values = secrets()
    virsh, systemd = Virsh(), FakeSystemd(UNITS)
    actions = compute.Compute(run=virsh, root=tmp_path).step(step_ctx(systemd, values))
    assert [c for c in systemd.calls if c[0] == "start"] == [("start", u) for u in UNITS]
    assert all(("enable", u) in systemd.calls for u in UNITS)
    nova, cinder = values["ceph-libvirt-nova"], values["ceph-libvirt-cinder"]
    assert "<usage type='ceph'>\n    <name>client.nova secret</name>" in virsh.defined[nova]
    assert "client.cinder secret" in virsh.defined[cinder]
    assert virsh.values == {nova: values["ceph-nova-key"], cinder: values["ceph-cinder-key"]}
    sets = [c for c in virsh.calls if "secret-set-value" in c]
    assert sets[0][:6] == ["virsh", "-c", "qemu:///system", "secret-set-value", "--secret",
                           nova] and sets[0][6] == "--file"
    for argv in virsh.calls:
        for key in (values["ceph-nova-key"], values["ceph-cinder-key"]):
            assert not any(key in arg for arg in argv), argv
    assert virsh.files and all(mode == 0o600 for _, mode in virsh.files)
    assert not any(os.path.exists(path) for path, _ in virsh.files)      # removed at once
    assert sum("libvirt secret" in a.target for a in actions) == 4      # 2 defined, 2 set
    # a second pass defines and sets nothing, starts nothing
    virsh.calls.clear()
    systemd.calls.clear()
    assert compute.Compute(run=virsh, root=tmp_path).step(step_ctx(systemd, values)) == []
    assert systemd.calls == [] and not any("secret-define" in c or "secret-set-value" in c
                                           for c in virsh.calls)
    # a rotated key (a new one imported in Ceph) is set again, and only that
    values["ceph-cinder-key"] = keyring.cephx_key().decode()
    compute.Compute(run=virsh, root=tmp_path).step(step_ctx(systemd, values))
    assert [c[5] for c in virsh.calls if "secret-set-value" in c] == [cinder]


def test_a_changed_file_restarts_libvirtd_and_nova_and_dry_run_does_nothing(tmp_path):
    values, virsh, systemd = secrets(), Virsh(), FakeSystemd(UNITS)
    comp = compute.Compute(run=virsh, root=tmp_path)
    comp.step(step_ctx(systemd, values))
    systemd.calls.clear()
    comp.step(step_ctx(systemd, values, changed=True))
    assert systemd.calls == [("restart", "libvirtd.service"),
                             ("restart", "nova-compute.service")]
    systemd.calls.clear()
    virsh.calls.clear()
    assert comp.step(step_ctx(systemd, values, changed=True, dry_run=True))
    assert systemd.calls == [] and virsh.calls == []


def test_check_wants_nova_running_and_libvirt_answering(tmp_path):
    systemd = FakeSystemd(UNITS)
    answers = {"rc": 0}

    def run(argv, **kw):
        return subprocess.CompletedProcess(argv, answers["rc"], "", "error: failed to connect")
    comp = compute.Compute(run=run, root=tmp_path)
    assert comp.check(view(), systemd).state == health.FAILED
    systemd.units["nova-compute.service"]["active"] = "active"
    assert comp.check(view(), systemd).state == health.OK
    answers["rc"] = 1
    result = comp.check(view(), systemd)
    assert result.state == health.FAILED and "failed to connect" in result.error
