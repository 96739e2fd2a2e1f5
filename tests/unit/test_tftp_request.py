"""The TFTP request parser and path resolver (rackforge.pxe.tftp_request), by example."""

import os
import struct

import pytest

from rackforge.pxe import tftp_request as rq


def rrq(name, mode=b"octet", *options, opcode=rq.RRQ):
    if isinstance(name, str):
        name = name.encode()
    return struct.pack("!H", opcode) + b"\0".join([name, mode, *options]) + b"\0"


@pytest.fixture
def root(tmp_path):
    """tmp/root with files, and a sibling tmp/root-private the server must never serve."""
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "ipxe.efi").write_bytes(b"EFI" * 100)
    (base / "sub" / "x.cfg").write_bytes(b"cfg")
    private = tmp_path / "root-private"
    private.mkdir()
    (private / "secret").write_bytes(b"SECRET")
    (base / "link-in").symlink_to("sub/x.cfg")
    (base / "link-out").symlink_to("/etc/passwd")
    (base / "link-sibling").symlink_to("../root-private")
    (base / "link-sibling-file").symlink_to(private / "secret")
    (base / "loop").symlink_to("loop")
    os.mkfifo(base / "fifo")
    return base


def test_parse_rrq_with_options():
    req = rq.parse_request(rrq("ipxe.efi", b"OCTET", b"BlkSize", b"1468", b"tsize", b"0"))
    assert req == rq.Request("ipxe.efi", "octet", {"blksize": "1468", "tsize": "0"})


def test_parse_ignores_odd_and_non_ascii_options():
    req = rq.parse_request(rrq("a", b"netascii", b"blksize", b"\xff", b"tsize"))
    assert req.options == {}


@pytest.mark.parametrize("datagram, code, reply", [
    (b"", rq.ILLEGAL_OP, False),
    (b"\0\1a", rq.ILLEGAL_OP, False),
    (rrq("x", opcode=rq.WRQ), rq.ACCESS_VIOLATION, True),
    (rrq("x", opcode=rq.ACK), rq.ILLEGAL_OP, False),
    (rrq("x", opcode=77), rq.ILLEGAL_OP, False),
    (rrq("x", b"mail"), rq.ILLEGAL_OP, True),
    (rrq("x", b""), rq.ILLEGAL_OP, True),
    (rrq(b""), rq.ILLEGAL_OP, False),
    (rrq(b"\xff\xfe.efi"), rq.ACCESS_VIOLATION, True),
    (rrq("a" * 256), rq.ACCESS_VIOLATION, True),
    (b"\0\1ipxe.efi\0octet", rq.ILLEGAL_OP, False),                  # mode not terminated
    (b"\0\1ipxe.efi", rq.ILLEGAL_OP, False),
    (rrq("x", b"octet", b"blksize", b"1" * 2000), rq.ILLEGAL_OP, False),   # over-long request
])
def test_parse_refusals(datagram, code, reply):
    """Garbage (malformed, other opcodes) gets no answer: a spoofed source must not
    turn the server into an amplifier; a well-formed refusal gets a short error."""
    with pytest.raises(rq.Refused) as exc:
        rq.parse_request(datagram)
    assert exc.value.code == code and exc.value.reply is reply


def test_nul_inside_name_ends_the_name_and_the_rest_is_a_bad_mode():
    with pytest.raises(rq.Refused) as exc:
        rq.parse_request(b"\0\1ipxe.efi\0../../etc/passwd\0octet\0")
    assert "mode" in exc.value.reason


def test_error_packets_are_not_answered():
    with pytest.raises(rq.Refused) as exc:
        rq.parse_request(b"\0\5\0\0oops\0")
    assert not exc.value.reply


@pytest.mark.parametrize("options, size, expected", [
    ({}, 10, {}),
    ({"blksize": "1468"}, 10, {"blksize": "1468"}),
    ({"blksize": "65464"}, 10, {"blksize": "1468"}),
    ({"blksize": "1"}, 10, {"blksize": "8"}),
    ({"blksize": "-5"}, 10, {}),
    ({"blksize": "12x"}, 10, {}),
    ({"blksize": "9" * 50}, 10, {}),
    ({"tsize": "0", "windowsize": "8"}, 850528, {"tsize": "850528"}),
])
def test_negotiate(options, size, expected):
    assert rq.negotiate(options, size, 1468) == expected


@pytest.mark.parametrize("name, target", [
    ("ipxe.efi", "ipxe.efi"),
    ("/ipxe.efi", "ipxe.efi"),               # leading / is relative to the root
    ("//./sub//x.cfg", "sub/x.cfg"),
    ("sub\\x.cfg", "sub/x.cfg"),
    ("link-in", "sub/x.cfg"),                # a symlink inside the root is followed
])
def test_resolve_inside(root, name, target):
    assert rq.resolve(root, name) == (root / target).resolve()


@pytest.mark.parametrize("name, code", [
    ("../root-private/secret", rq.ACCESS_VIOLATION),
    ("sub/../../root-private/secret", rq.ACCESS_VIOLATION),
    ("sub/../ipxe.efi", rq.ACCESS_VIOLATION),       # '..' is refused even when it stays in
    ("..\\root-private\\secret", rq.ACCESS_VIOLATION),
    ("/etc/passwd", rq.FILE_NOT_FOUND),             # i.e. ROOT/etc/passwd
    ("link-out", rq.ACCESS_VIOLATION),
    ("link-sibling/secret", rq.ACCESS_VIOLATION),  # the /srv/tftp vs /srv/tftp-private bug
    ("link-sibling-file", rq.ACCESS_VIOLATION),
    ("loop", rq.ACCESS_VIOLATION),
    ("ipxe.efi/x", rq.FILE_NOT_FOUND),
    ("missing", rq.FILE_NOT_FOUND),
    ("ipxe\0.efi", rq.ACCESS_VIOLATION),
    ("ipxe\n.efi", rq.ACCESS_VIOLATION),
    ("a/" * 200, rq.ACCESS_VIOLATION),
    ("/", rq.FILE_NOT_FOUND),
    ("..%2f..%2fetc%2fpasswd", rq.FILE_NOT_FOUND),  # no URL decoding: a plain missing name
])
def test_resolve_refusals(root, name, code):
    with pytest.raises(rq.Refused) as exc:
        rq.resolve(root, name)
    assert exc.value.code == code


def test_resolve_compares_components_not_prefixes(tmp_path):
    """A root given through a symlink or with a trailing slash changes nothing."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root-private").mkdir()
    (tmp_path / "root-private" / "s").write_text("SECRET")
    (tmp_path / "root" / "s").symlink_to(tmp_path / "root-private" / "s")
    (tmp_path / "alias").symlink_to("root")
    for root in (tmp_path / "root", str(tmp_path / "root") + "/", tmp_path / "alias"):
        with pytest.raises(rq.Refused):
            rq.resolve(root, "s")


@pytest.mark.parametrize("name, reason", [
    ("sub", "a directory"),
    ("fifo", "not a regular file"),     # must not block the server on open
])
def test_open_refuses_non_regular_files(root, name, reason):
    with pytest.raises(rq.Refused) as exc:
        rq.open_in_root(root, name)
    assert exc.value.reason == reason and exc.value.code == rq.ACCESS_VIOLATION


def test_open_returns_file_and_size(root):
    fileobj, path, size = rq.open_in_root(root, "/ipxe.efi")
    with fileobj:
        assert fileobj.read() == b"EFI" * 100
    assert size == 300 and path == (root / "ipxe.efi").resolve()


def test_unreadable_file_is_an_access_violation(root):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    (root / "ipxe.efi").chmod(0)
    with pytest.raises(rq.Refused) as exc:
        rq.open_in_root(root, "ipxe.efi")
    assert exc.value.code == rq.ACCESS_VIOLATION


def test_show_escapes_and_bounds():
    assert rq.show("a\nb") == "'a\\nb'"
    assert len(rq.show("x" * 500)) < 90
    assert rq.peek_name(b"\0\2../x\xff\0octet\0") == "'../x\\\\xff'"
