"""The build's secrets check finds what package scripts leave behind, and nothing else."""

import pytest

from rackforge.images import secrets

KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ" * 3
       + "\n-----END OPENSSH PRIVATE KEY-----\n")


def tree(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_a_clean_tree_has_nothing(tmp_path):
    root = tree(tmp_path, {"etc/machine-id": "uninitialized\n", "etc/ssh/sshd_config": "x\n",
                           "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA\n",
                           "usr/share/doc/x/test.key": KEY})
    assert secrets.find(root) == []


@pytest.mark.parametrize("rel,text", [
    ("var/lib/rabbitmq/.erlang.cookie", "ABCDEFGHIJKLMNOPQRST"),
    ("etc/ssh/ssh_host_ed25519_key", KEY),
    ("etc/ssl/private/ssl-cert-snakeoil.key", KEY),
    ("var/lib/openstack-dashboard/secret-key/.secret_key_store", "k"),
    ("etc/keystone/fernet-keys/0", "k"),
    ("etc/ceph/ceph.client.admin.keyring", "[client.admin]\n"),
    ("var/lib/somepackage/generated.pem", KEY),
    ("root/.ssh/id_rsa", KEY.replace("OPENSSH", "RSA")),
])
def test_each_kind_of_leftover_is_found(tmp_path, rel, text):
    assert secrets.find(tree(tmp_path, {rel: text})) == [rel]


def test_a_library_that_only_mentions_the_header_is_not_a_key(tmp_path):
    js = 'var h = "-----BEGIN RSA PRIVATE KEY-----\\n" + body + "-----END RSA PRIVATE KEY-----";'
    assert secrets.find(tree(tmp_path, {"var/lib/dashboard/static/jsencrypt.js": js})) == []


def test_a_machine_id_baked_into_the_image_is_a_finding(tmp_path):
    root = tree(tmp_path, {"etc/machine-id": "0123456789abcdef0123456789abcdef\n"})
    assert secrets.find(root) == ["etc/machine-id (holds an id: every node would share it)"]
