"""Password sources, refusals, and the cluster key."""

import logging
import os
import stat

import pytest

from rackforge.bmc import credentials, errors


def test_password_from_file_first_line(tmp_path):
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    f.chmod(0o600)
    assert credentials.read_password(file=str(f)) == "s3cret"


@pytest.mark.parametrize("content", [b"\xef\xbb\xbfs3cret\n", b"s3cret\r\n", b"s3cret",
                                     b"\xef\xbb\xbfs3cret\r\nsecond line\n"])
def test_a_byte_order_mark_and_the_line_end_are_not_the_password(tmp_path, content):
    """A BOM written by an editor used to stay in the password."""
    f = tmp_path / "pw"
    f.write_bytes(content)
    f.chmod(0o600)
    assert credentials.read_password(file=str(f)) == "s3cret"


def test_a_password_file_that_is_not_utf8_is_one_line(tmp_path):
    f = tmp_path / "pw"
    f.write_bytes(b"caf\xe9\n")
    with pytest.raises(errors.PasswordFileError, match="pw: not UTF-8 text"):
        credentials.read_password(file=str(f))


def test_world_readable_password_file_warns(tmp_path, caplog):
    f = tmp_path / "pw"
    f.write_text("s3cret")
    f.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        credentials.read_password(file=str(f))
    assert "readable by other users" in caplog.text and "s3cret" not in caplog.text


def test_missing_password_file_is_one_line(tmp_path):
    with pytest.raises(errors.PasswordFileError) as e:
        credentials.read_password(file=str(tmp_path / "nope"))
    assert "nope" in str(e.value)


def test_password_from_env_and_prompt():
    assert credentials.read_password(env="X", environ={"X": "a"}) == "a"
    assert credentials.read_password(environ={credentials.DEFAULT_PASSWORD_ENV: "b"}) == "b"
    assert credentials.read_password(prompt=True, environ={}, ask=lambda p: "c") == "c"
    with pytest.raises(errors.PasswordMissing):
        credentials.read_password(environ={})
    with pytest.raises(errors.PasswordMissing):
        credentials.read_password(env="X", environ={})


def test_refuses_anonymous_and_empty_unless_insecure():
    with pytest.raises(errors.InsecureRefused):
        credentials.check_login("", "x", "b")
    with pytest.raises(errors.InsecureRefused):
        credentials.check_login("admin", "", "b")
    credentials.check_login("", "", "b", insecure=True)


def test_default_credentials_warn_without_the_password(caplog):
    with caplog.at_level(logging.WARNING):
        credentials.check_login("root", "calvin", "10.0.0.5")
    assert "factory-default" in caplog.text and "calvin" not in caplog.text


def test_cluster_key_created_0600_and_reused(tmp_path, monkeypatch):
    path = tmp_path / "state" / "cluster.key"
    monkeypatch.setenv(credentials.KEY_ENV, str(path))
    key = credentials.load_key()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert credentials.load_key() == key
    assert [p.name for p in path.parent.iterdir()] == ["cluster.key"]
    token = credentials.encrypt("s3cret", key)
    assert "s3cret" not in token
    assert credentials.decrypt(token, key) == "s3cret"


def test_missing_key_without_create(tmp_path):
    with pytest.raises(errors.ClusterKeyError):
        credentials.load_key(tmp_path / "k", create=False)


def test_decrypt_with_another_key_is_one_line(tmp_path):
    k1 = credentials.load_key(tmp_path / "a")
    k2 = credentials.load_key(tmp_path / "b")
    with pytest.raises(errors.CredentialDecryptError) as e:
        credentials.decrypt(credentials.encrypt("x", k1), k2, node="n1")
    assert "n1" in str(e.value)


def test_redacting_filter():
    rec = logging.LogRecord("x", logging.INFO, "f", 1, "pw is %s", ("s3cret",), None)
    credentials.RedactingFilter(["s3cret"]).filter(rec)
    assert rec.getMessage() == "pw is ***"
