"""TFTP request parsing and path resolution for the read-only TFTP server.

Pure functions, no sockets: ``parse_request`` turns the first datagram of a
transfer into a ``Request`` and ``open_in_root`` turns its file name into an
open regular file inside the TFTP root.  Both either succeed or raise
``Refused`` (TFTP error code + one-line reason); nothing else escapes, which
the property-based tests check.

Path policy (stricter than tftp-hpa's, never looser):

- A leading ``/`` (or several) is taken relative to the root, as tftp-hpa does
  with ``--secure``: ``/ipxe.efi`` is ``ROOT/ipxe.efi``, ``/etc/passwd`` is
  ``ROOT/etc/passwd`` (missing, so refused).
- ``\\`` is a separator too (some PXE ROMs send DOS paths); empty and ``.``
  components are dropped.
- Any ``..`` component is refused, even one that would stay inside the root.
- NUL or other control characters, names over ``MAX_NAME`` bytes and names
  that are not UTF-8 are refused.
- The real path (symlinks resolved) must lie inside the real root, compared
  by path components (``os.path.commonpath``), never by string prefix: with
  root ``/srv/tftp``, ``/srv/tftp-private/x`` is outside.  Symlinks that stay
  inside the root are followed.
- Only regular files are served: directories, FIFOs and devices are refused.
  The file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked again with
  ``fstat`` so a FIFO cannot block the server and a last-moment symlink swap
  of the final component is refused.
"""

import errno
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

# TFTP error codes (RFC 1350, RFC 2347)
NOT_DEFINED, FILE_NOT_FOUND, ACCESS_VIOLATION, ILLEGAL_OP, BAD_OPTIONS = 0, 1, 2, 4, 8

MAX_NAME = 255            # bytes, as most TFTP servers
MAX_REQUEST = 1024        # an RRQ longer than this is not a PXE client's
MODES = ("octet", "netascii")   # netascii is served unconverted, as tftpy does
READ_BUFFER = 1 << 16
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464   # RFC 2348


class Refused(Exception):
    """A request the server answers with a TFTP error packet.

    ``code`` is the TFTP error code, ``reason`` a one-line reason for the log;
    ``reply`` is False when no error packet must be sent (an ERROR packet is
    never answered with another one, garbage is not answered at all).
    """

    def __init__(self, code, reason, reply=True):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.reply = reply


@dataclass(frozen=True)
class Request:
    """A parsed read request: ``filename`` as sent (decoded), ``options``
    with lower-case names, first occurrence wins."""

    filename: str
    mode: str
    options: dict = field(default_factory=dict)


def parse_request(datagram):
    """Parse the first datagram of a transfer; return a ``Request`` (RRQ only).

    Raises ``Refused`` for anything else: write requests (access violation,
    the server is read-only), names that are not UTF-8, modes other than octet
    and netascii; and, with ``reply`` False (garbage, or spoofed: no answer at
    all), other opcodes and malformed or over-long requests.
    """
    if len(datagram) < 4:
        raise Refused(ILLEGAL_OP, "malformed packet (%d bytes)" % len(datagram), reply=False)
    (opcode,) = struct.unpack("!H", datagram[:2])
    if opcode == WRQ:
        raise Refused(ACCESS_VIOLATION, "write request refused: the server is read-only")
    if opcode == ERROR:
        raise Refused(NOT_DEFINED, "error packet outside a transfer", reply=False)
    if opcode != RRQ:
        raise Refused(ILLEGAL_OP, "opcode %d outside a transfer" % opcode, reply=False)
    if len(datagram) > MAX_REQUEST:
        raise Refused(ILLEGAL_OP, "request too long (%d bytes)" % len(datagram), reply=False)
    fields = datagram[2:].split(b"\0")
    if len(fields) < 3 or fields[-1] != b"":
        raise Refused(ILLEGAL_OP, "malformed request: fields not NUL-terminated", reply=False)
    fields.pop()
    raw_name, raw_mode, raw_opts = fields[0], fields[1], fields[2:]
    if not raw_name:
        raise Refused(ILLEGAL_OP, "malformed request: empty file name", reply=False)
    if len(raw_name) > MAX_NAME:
        raise Refused(ACCESS_VIOLATION, "file name too long (%d bytes)" % len(raw_name))
    try:
        filename = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(ACCESS_VIOLATION, "file name is not UTF-8") from None
    mode = raw_mode.decode("ascii", "replace").lower()
    if mode not in MODES:
        raise Refused(ILLEGAL_OP, "unsupported mode %s" % show(mode))
    return Request(filename, mode, _parse_options(raw_opts))


def _parse_options(raw):
    """Option name/value pairs (RFC 2347); odd trailing fields and non-ASCII
    options are ignored, as the RFC lets a server ignore what it does not know."""
    options = {}
    for i in range(0, len(raw) - 1, 2):
        try:
            name = raw[i].decode("ascii").lower()
            value = raw[i + 1].decode("ascii")
        except UnicodeDecodeError:
            continue
        options.setdefault(name, value)
    return options


def negotiate(options, size, blksize_max):
    """The options to acknowledge (OACK), as strings; {} means no OACK.

    ``blksize`` is clamped to [8, blksize_max]; ``tsize`` is answered with the
    file's size.  Unknown options and unparsable values are ignored.
    """
    accepted = {}
    blksize = _int(options.get("blksize"))
    if blksize is not None:
        accepted["blksize"] = str(max(MIN_BLKSIZE, min(blksize, blksize_max, MAX_BLKSIZE)))
    if _int(options.get("tsize")) is not None:
        accepted["tsize"] = str(size)
    return accepted


def _int(value):
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    return int(value)


def relative_parts(filename):
    """The components of a requested name below the root, or ``Refused``."""
    if "\0" in filename or any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise Refused(ACCESS_VIOLATION, "control character in file name")
    if len(filename.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise Refused(ACCESS_VIOLATION, "file name too long")
    parts = [p for p in filename.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(ACCESS_VIOLATION, "'..' in file name")
    if not parts:
        raise Refused(FILE_NOT_FOUND, "no file name")
    return parts


def resolve_root(root):
    """The real path of the TFTP root; ``NotADirectoryError`` if it is none."""
    real = os.path.realpath(root, strict=True)
    if not os.path.isdir(real):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root))
    return real


def resolve(root, filename):
    """The real path of ``filename`` inside ``root``; ``Refused`` if it would
    leave the root or does not exist.  ``root`` must be a real directory path."""
    root = os.path.realpath(root)
    parts = relative_parts(filename)
    try:
        real = os.path.realpath(os.path.join(root, *parts), strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise Refused(FILE_NOT_FOUND, "no such file") from None
    except (OSError, ValueError) as err:   # ELOOP, ENAMETOOLONG, EACCES, surrogates
        raise Refused(ACCESS_VIOLATION, "cannot resolve: %s" % _reason(err)) from None
    if os.path.commonpath([root, real]) != root:
        raise Refused(ACCESS_VIOLATION, "path escapes the TFTP root")
    return Path(real)


def open_in_root(root, filename):
    """Open ``filename`` inside ``root`` for reading; return (file, path, size).

    The file object is unbuffered-binary (``rb``); the caller closes it.
    """
    path = resolve(root, filename)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Refused(FILE_NOT_FOUND, "no such file") from None
    except OSError as err:
        code = FILE_NOT_FOUND if err.errno == errno.ENOENT else ACCESS_VIOLATION
        raise Refused(code, "cannot open: %s" % _reason(err)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise Refused(ACCESS_VIOLATION, kind)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=READ_BUFFER), path, st.st_size
    except BaseException:
        os.close(fd)
        raise


def _reason(err):
    return os.strerror(err.errno).lower() if getattr(err, "errno", None) else type(err).__name__


def show(text, limit=80):
    """A name as it may appear in one log line: escaped, bounded."""
    shown = ascii(text)
    return shown if len(shown) <= limit else shown[:limit] + "...'"


def peek_name(datagram):
    """The file name field of a request, for the log, whatever the request."""
    raw = datagram[2:].split(b"\0", 1)[0]
    return show(raw.decode("utf-8", "backslashreplace"))
