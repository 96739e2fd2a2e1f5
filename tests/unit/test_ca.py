"""The cluster CA: creation, files, pin, node certificates and the pin check."""

import hashlib
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from rackforge.cluster import ca


@pytest.fixture
def authority(tmp_path):
    return ca.CertificateAuthority.init(tmp_path / "ca", cluster="r1")


def test_files_modes_and_reload(authority, tmp_path):
    d = tmp_path / "ca"
    assert stat.S_IMODE((d / ca.KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert not [p for p in d.iterdir() if p.name.startswith(".")]   # no temporaries left
    again = ca.CertificateAuthority.init(d)                         # idempotent
    assert again.pin == authority.pin
    assert ca.CertificateAuthority.load(d).cert_pem == authority.cert_pem


def test_state_dir_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path))
    made = ca.CertificateAuthority.init()
    assert (tmp_path / "ca" / ca.CERT_FILE).is_file()
    assert ca.CertificateAuthority.load().pin == made.pin


def test_missing_ca_is_one_line(tmp_path):
    with pytest.raises(ca.CANotFound, match="rackforge cluster ca init"):
        ca.CertificateAuthority.load(tmp_path / "none")


def test_half_written_ca_is_made_afresh(tmp_path):
    d = tmp_path / "ca"
    first = ca.CertificateAuthority.init(d)
    (d / ca.CERT_FILE).unlink()           # power cut between the key and the certificate
    second = ca.CertificateAuthority.init(d)
    assert second.pin != first.pin
    assert ca.CertificateAuthority.load(d).pin == second.pin


def test_mismatched_pair_is_refused(tmp_path):
    a = ca.CertificateAuthority.init(tmp_path / "a")
    ca.CertificateAuthority.init(tmp_path / "b")
    (tmp_path / "b" / ca.CERT_FILE).write_bytes(a.cert_pem)
    with pytest.raises(ca.CAError, match="does not belong"):
        ca.CertificateAuthority.load(tmp_path / "b")


def test_ca_certificate_is_a_ca(authority):
    cert = x509.load_pem_x509_certificate(authority.cert_pem)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_pin_is_sha256_of_the_spki(tmp_path, key_type):
    authority = ca.CertificateAuthority.init(tmp_path, key_type=key_type)
    cert = x509.load_pem_x509_certificate(authority.cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert authority.pin == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert ca.check_pin(authority.cert_pem, authority.pin.upper().replace("SHA256", "sha256"))


def test_check_pin_refuses_another_ca(authority, tmp_path):
    other = ca.CertificateAuthority.init(tmp_path / "other")
    with pytest.raises(ca.CAPinMismatch, match="nothing was sent") as e:
        ca.check_pin(other.cert_pem, authority.pin, endpoint="https://10.0.0.1:9443")
    assert "\n" not in str(e.value) and "10.0.0.1" in str(e.value)
    with pytest.raises(ca.CAPinMismatch):
        ca.check_pin(b"not a certificate", authority.pin)


@pytest.mark.parametrize("pin", ["", "abc", "sha256:" + "0" * 63, "md5:" + "0" * 64,
                                 "sha256:" + "g" * 64])
def test_malformed_pin(authority, pin):
    with pytest.raises(ca.BadPin):
        ca.check_pin(authority.cert_pem, pin)


def _san(cert_pem):
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return cert, san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)


def test_issue_from_the_nodes_csr_with_the_cas_names(authority):
    csr_pem, key_pem = ca.make_csr("r1n2")
    issued = authority.issue("r1n2", ["10.0.0.12/24", "fd00::12"], csr_pem)
    cert, names, ips = _san(issued.cert_pem)
    assert names == ["r1n2"]
    assert ips == [ipaddress.ip_address("10.0.0.12"), ipaddress.ip_address("fd00::12")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert authority.verify(issued.cert_pem)
    assert issued.ca_pem == authority.cert_pem
    assert not hasattr(issued, "key_pem")          # the CA never makes a node's key


@pytest.mark.parametrize("usage, ekus", [
    (ca.NODE, {ExtendedKeyUsageOID.CLIENT_AUTH}),
    (ca.CONTROLLER, {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
    (ca.JOIN_SERVICE, {ExtendedKeyUsageOID.SERVER_AUTH,
                       x509.ObjectIdentifier(ca.JOIN_SERVICE_OID)}),
])
def test_usage_decides_the_key_usages_and_only_the_join_service_has_its_own(
        authority, usage, ekus):
    csr_pem, _ = ca.make_csr("n1")
    cert_pem = authority.issue("n1", ["10.0.0.1"], csr_pem, usage=usage).cert_pem
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == ekus
    assert ca.has_usage(cert_pem, ca.JOIN_SERVICE) == (usage == ca.JOIN_SERVICE)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert ca.has_usage(der, usage)


def test_other_ca_does_not_verify(authority, tmp_path):
    other = ca.CertificateAuthority.init(tmp_path / "other")
    csr_pem, _ = ca.make_csr("n1")
    assert not other.verify(authority.issue("n1", [], csr_pem).cert_pem)


def _csr(key, subject="n1", sans=(), ca_request=False):
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if ca_request:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                        critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_csr_asking_for_more_than_this_node_is_refused(authority):
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = ec.generate_private_key(ec.SECP256R1())
    refusals = [
        (_csr(key, ca_request=True), "asks for a CA certificate"),
        (_csr(key, subject="n2"), "subject names another node"),
        (_csr(key, sans=[x509.DNSName("n2")]), "not this node's: n2"),
        (_csr(key, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
         "not this node's: 127.0.0.1"),
        (_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
         "RSA key has 1024 bits"),
        (_csr(ec.generate_private_key(ec.SECP192R1())), "EC key has 192 bits"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n", "not a PEM certificate request"),
        (None, "not a PEM certificate request"),
    ]
    for csr_pem, why in refusals:
        with pytest.raises(ca.BadCSR, match="node n1 refused: .*%s" % why):
            authority.issue("n1", ["10.0.0.1"], csr_pem)
    # the node's own name and address in its CSR are fine
    ok = _csr(key, sans=[x509.DNSName("n1"), x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
    assert authority.issue("n1", ["10.0.0.1"], ok).cert_pem


def test_bad_address(authority):
    csr_pem, _ = ca.make_csr("n1")
    with pytest.raises(ca.CAError, match="not an IP address"):
        authority.issue("n1", ["10.0.0.300"], csr_pem)
