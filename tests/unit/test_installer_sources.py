"""Where the installer finds its answer file: the kernel command line's HTTPS URL with a
pinned certificate (a real TLS server on loopback), a partition labelled RF-ANSWER, the
installation medium, in that order."""

import datetime
import hashlib
import http.server
import ssl
import threading
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rackforge.installer import sources

ANSWER = "version: 1\nhostname: node1\n"


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "answers")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest.fixture
def https(tmp_path):
    pin = self_signed(tmp_path)
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = ANSWER.encode() if self.path == "/node1.yaml" else b"no"
            self.send_response(200 if self.path == "/node1.yaml" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield SimpleNamespace(url="https://127.0.0.1:%d" % server.server_port, pin=pin,
                          requests=requests)
    server.shutdown()
    server.server_close()


def no_label(argv, **kw):
    return SimpleNamespace(returncode=2, stdout="", stderr="")


def test_the_command_line_url_is_fetched_only_from_the_pinned_certificate(https):
    line = "boot=live rackforge.mode=install rackforge.answer=%s/node1.yaml " \
           "rackforge.answer_pin=%s" % (https.url, https.pin)
    found = sources.find(line, run=no_label)
    assert found.text == ANSWER and "certificate pinned" in found.source
    assert https.requests == ["/node1.yaml"]

    wrong = line.replace(https.pin, "0" * 64)
    with pytest.raises(sources.AnswerSourceError, match="does not match rackforge.answer_pin; "
                       "nothing was requested"):
        sources.find(wrong, run=no_label)
    assert https.requests == ["/node1.yaml"]            # not asked again
    with pytest.raises(sources.AnswerSourceError, match="the server answered 404"):
        sources.find(line.replace("node1.yaml", "node9.yaml"), run=no_label)


def test_plain_http_or_no_pin_is_refused_before_any_connection():
    with pytest.raises(sources.AnswerSourceError, match="must be https://"):
        sources.find("rackforge.answer=http://10.0.0.1/a.yaml rackforge.answer_pin=" + "a" * 64)
    with pytest.raises(sources.AnswerSourceError, match="answer_pin must be the 64 hex"):
        sources.find("rackforge.answer=https://10.0.0.1/a.yaml")


def test_a_labelled_partition_comes_before_the_medium_and_names_its_device(tmp_path):
    medium = tmp_path / "medium"
    (medium / "rackforge").mkdir(parents=True)
    (medium / "rackforge" / "answer.yaml").write_text("version: 1\nhostname: from-iso\n")
    calls = []

    def run(argv, **kw):
        calls.append(argv)
        if argv[:2] == ["blkid", "-L"] and argv[2] == "RF-ANSWER":
            return SimpleNamespace(returncode=0, stdout="/dev/sdc1\n", stderr="")
        if argv[0] == "mount":
            (tmp_path / "mounted").write_text(argv[-1])
            import pathlib
            (pathlib.Path(argv[-1]) / "answer.yaml").write_text(ANSWER)
            return SimpleNamespace(returncode=0, stdout="", stderr="")
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    found = sources.find("boot=live", run=run, medium=medium)
    assert found.text == ANSWER and found.device == "/dev/sdc1"
    mount = next(c for c in calls if c[0] == "mount")
    assert mount[1:3] == ["-o", "ro,nosuid,nodev,noexec"]
    assert any(c[0] == "umount" for c in calls)

    found = sources.find("boot=live", run=no_label, medium=medium)
    assert "hostname: from-iso" in found.text and found.device is None
    assert sources.find("boot=live", run=no_label, medium=tmp_path / "none") is None


def test_a_labelled_partition_without_the_file_is_an_error_not_a_fall_through(tmp_path):
    def run(argv, **kw):
        if argv[:2] == ["blkid", "-L"]:
            return SimpleNamespace(returncode=0, stdout="/dev/sdc1\n", stderr="")
        return SimpleNamespace(returncode=0, stdout="", stderr="")
    with pytest.raises(sources.AnswerSourceError, match="has no answer.yaml at its root"):
        sources.find("boot=live", run=run, medium=tmp_path)
