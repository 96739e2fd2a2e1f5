"""The cluster's certificate authority: create it, pin it, issue node certificates.

The seed creates one CA per cluster (EC P-256 by default, RSA 2048 on
request) in ``state_dir()/ca/``: ``ca.key`` (0600) and ``ca.crt``, each
written atomically.  A joining node learns the CA's *pin* out of band, in
its join token bundle, and checks the CA the endpoint presents against it
(:func:`check_pin`) before it sends anything secret, in the manner of
kubeadm's ``--discovery-token-ca-cert-hash``.

The pin is ``sha256:<hex>`` of the CA certificate's DER-encoded
SubjectPublicKeyInfo (kubeadm's choice: it survives re-signing the CA
certificate with the same key).

Node certificates carry the node's name and the addresses the cluster
decided as subjectAltName, and come only from a CSR: every key is made on
the node that keeps it.  The CA decides the names (a CSR that asks for other
names, or for a CA, is refused) and the usage: every node an etcd client,
controllers also etcd servers, and only a controller's join service the
join-service usage a joining node checks for.
"""

import datetime
import hashlib
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rackforge import errors, paths
from rackforge.fileutil import atomic_write, make_dirs

KEY_FILE = "ca.key"
CERT_FILE = "ca.crt"
KEY_TYPES = ("ec", "rsa")
CA_DAYS = 3650
NODE_DAYS = 365
PIN_RE = re.compile(r"^sha256:([0-9a-f]{64})\Z")


class CAError(errors.RackforgeError):
    message = "cluster CA: {detail}"


class CANotFound(errors.ConfigError):
    message = ("no cluster CA in {directory}; create it on the seed with "
               "'rackforge cluster ca init' or point RACKFORGE_STATE at the seed's state")


class CAPinMismatch(errors.RackforgeError):
    message = ("the CA presented by {endpoint} does not match the pinned {pin}; "
               "nothing was sent: check the endpoint and copy the join bundle again")
    exit_code = 2


class BadPin(errors.ConfigError):
    message = ("CA pin '{pin}' is not in the form sha256:<64 hex digits>; "
               "copy ca_sha256 from 'rackforge cluster token create --json'")


class BadCSR(errors.ConfigError):
    message = "certificate request for node {node} refused: {why}"


def ca_dir():
    return paths.state_dir() / "ca"


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _generate_key(key_type):
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CAError(detail="key type '%s' is not one of %s" % (key_type, ", ".join(KEY_TYPES)))


def _key_pem(key):
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert):
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _load_cert(pem, what="certificate"):
    from cryptography import x509

    if isinstance(pem, str):
        pem = pem.encode()
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise CAError(detail="%s is not a PEM certificate (%s)" % (what, e)) from e


def pin_of(ca_pem):
    """``sha256:<hex>`` of the certificate's SubjectPublicKeyInfo (DER)."""
    from cryptography.hazmat.primitives import serialization

    cert = _load_cert(ca_pem, "the CA certificate")
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def normalize_pin(pin):
    """Lower-case ``sha256:<hex>``; raises :class:`BadPin`."""
    text = str(pin or "").strip().lower()
    if PIN_RE.match(text) is None:
        raise BadPin(pin=pin)
    return text


def check_pin(ca_pem, pin, endpoint="the join endpoint"):
    """Raise :class:`CAPinMismatch` unless ``ca_pem`` is the CA ``pin`` names.

    Call it on the CA an endpoint presents before sending it any secret.
    :returns: True.
    """
    expected = normalize_pin(pin)
    try:
        actual = pin_of(ca_pem)
    except CAError:
        raise CAPinMismatch(endpoint=endpoint, pin=expected) from None
    if not hmac.compare_digest(actual, expected):
        raise CAPinMismatch(endpoint=endpoint, pin=expected)
    return True


def _ip(text):
    try:
        return ipaddress.ip_address(str(text).split("/")[0])
    except ValueError:
        raise CAError(detail="'%s' is not an IP address" % text) from None


@dataclass
class Issued:
    """A certificate issued from a node's CSR (the node keeps its key)."""
    cert_pem: bytes
    ca_pem: bytes = None


#: what a certificate is for, and so which extended key usages it carries
NODE = "node"                   # every node: an etcd client
CONTROLLER = "controller"       # a controller: etcd server and peer, and client
JOIN_SERVICE = "join-service"   # the join service's HTTPS endpoint on a controller
USAGES = (NODE, CONTROLLER, JOIN_SERVICE)
#: the join service's own usage, under the UUID arc 2.25 (ITU-T X.667, no registry
#: needed): a joining node accepts as join endpoint only a certificate carrying it
JOIN_SERVICE_OID = "2.25.132372075087042583860510876648328197583"
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256


def _ekus(usage):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID as E

    return {NODE: [E.CLIENT_AUTH],
            CONTROLLER: [E.SERVER_AUTH, E.CLIENT_AUTH],
            JOIN_SERVICE: [E.SERVER_AUTH, x509.ObjectIdentifier(JOIN_SERVICE_OID)]}[usage]


def has_usage(cert, usage):
    """True if the certificate (PEM or DER bytes) carries the usages of ``usage``."""
    from cryptography import x509

    try:
        loaded = (x509.load_pem_x509_certificate(cert) if cert.lstrip().startswith(b"-----")
                  else x509.load_der_x509_certificate(cert))
        ekus = loaded.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return all(oid in ekus for oid in _ekus(usage))


def public_key_pin(public_key):
    """``sha256:<hex>`` of a public key's DER SubjectPublicKeyInfo: a node's key id."""
    from cryptography.hazmat.primitives import serialization

    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def check_csr(csr_pem, name, addresses=()):
    """The CSR's public key, if ``csr_pem`` is an acceptable request from node ``name``.

    Refused (:class:`BadCSR`): not a PEM request, a signature that does not
    match its key, a weak key (RSA under 2048 bits, EC under 256), a request
    for a CA certificate, or a subject or subjectAltName naming anything but
    ``name`` and ``addresses``.  The CA never copies names from a CSR; these
    checks make a request that asks for more a refusal, not a silent trim.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID

    if isinstance(csr_pem, str):
        csr_pem = csr_pem.encode()
    if not isinstance(csr_pem, bytes):
        raise BadCSR(node=name, why="it is not a PEM certificate request")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise BadCSR(node=name, why="it is not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise BadCSR(node=name, why="its signature does not match its key")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise BadCSR(node=name, why="its RSA key has %d bits (at least %d)"
                         % (key.key_size, MIN_RSA_BITS))
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            raise BadCSR(node=name, why="its EC key has %d bits (at least %d)"
                         % (key.curve.key_size, MIN_EC_BITS))
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise BadCSR(node=name, why="its key is not RSA, EC or Ed25519")
    for ext in csr.extensions:
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise BadCSR(node=name, why="it asks for a CA certificate")
        if isinstance(ext.value, x509.SubjectAlternativeName):
            dns = set(ext.value.get_values_for_type(x509.DNSName))
            ips = {str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)}
            others = (dns - {name}) | (ips - {str(_ip(a)) for a in addresses})
            if others:
                raise BadCSR(node=name, why="it asks for names that are not this node's: %s"
                             % ", ".join(sorted(others))[:200])
    cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if any(cn != name for cn in cns):
        raise BadCSR(node=name, why="its subject names another node (%s)"
                     % ", ".join(map(str, cns))[:100])
    return key


class CertificateAuthority:
    """A CA held in ``directory`` (``ca.key``, ``ca.crt``)."""

    def __init__(self, directory, key, cert):
        self.directory = Path(directory)
        self._key = key
        self.cert = cert

    # -- creating and loading ------------------------------------------------------
    @classmethod
    def init(cls, directory=None, cluster="rackforge", key_type="ec"):
        """Create the CA in ``directory``, or return the one already there.

        The key is written first (0600), then the certificate; a CA whose
        certificate never got written (power cut) is created afresh, since
        nothing can have been signed with it yet.  A failure to write (a full
        or read-only file system) removes the key again: nothing half-made.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        directory = Path(directory or ca_dir())
        if (directory / CERT_FILE).is_file() and (directory / KEY_FILE).is_file():
            return cls.load(directory)
        make_dirs(directory, 0o700)
        os.chmod(directory, 0o700)      # an existing one too: it holds the CA key
        key = _generate_key(key_type)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rackforge"),
                          x509.NameAttribute(NameOID.COMMON_NAME,
                                             "rackforge cluster CA %s" % cluster)])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        atomic_write(directory / KEY_FILE, _key_pem(key), mode=0o600)
        try:
            atomic_write(directory / CERT_FILE, _cert_pem(cert), mode=0o644)
        except BaseException:
            # a full disk or an interrupt: no key without its certificate is left behind
            (directory / KEY_FILE).unlink(missing_ok=True)
            raise
        return cls(directory, key, cert)

    @classmethod
    def install(cls, key_pem, cert_pem, directory=None):
        """Keep a copy of the cluster's CA here (a controller that serves joins): the
        key from the sealed secret store, written 0600 before the certificate."""
        directory = Path(directory or ca_dir())
        make_dirs(directory, 0o700)
        os.chmod(directory, 0o700)      # an existing one too: it holds the CA key
        atomic_write(directory / KEY_FILE, key_pem, mode=0o600)
        atomic_write(directory / CERT_FILE, cert_pem, mode=0o644)
        return cls.load(directory)

    @classmethod
    def load(cls, directory=None):
        from cryptography.hazmat.primitives import serialization

        directory = Path(directory or ca_dir())
        try:
            key_pem = (directory / KEY_FILE).read_bytes()
            cert_pem = (directory / CERT_FILE).read_bytes()
        except FileNotFoundError:
            raise CANotFound(directory=directory) from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as e:
            raise CAError(detail="%s is not a PEM private key (%s)"
                          % (directory / KEY_FILE, e)) from e
        cert = _load_cert(cert_pem, str(directory / CERT_FILE))
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise CAError(detail="%s does not belong to %s; restore the pair from a backup"
                          % (directory / KEY_FILE, directory / CERT_FILE))
        return cls(directory, key, cert)

    # -- what others need --------------------------------------------------------
    @property
    def cert_pem(self):
        return _cert_pem(self.cert)

    @property
    def pin(self):
        return pin_of(self.cert_pem)

    # -- issuing -------------------------------------------------------------------
    def issue(self, name, addresses, csr_pem, usage=NODE, days=NODE_DAYS):
        """A certificate for node ``name`` from its CSR: the key stays on the node.

        The names are the CA's, never the CSR's: ``name`` (DNS) and ``addresses``
        (IP), which the cluster decided.  ``usage`` sets the extended key usages.

        :raises BadCSR: see :func:`check_csr`.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        if usage not in USAGES:
            raise CAError(detail="usage '%s' is not one of %s" % (usage, ", ".join(USAGES)))
        public_key = check_csr(csr_pem, name, addresses)
        sans = [x509.DNSName(name)] + [x509.IPAddress(_ip(a)) for a in addresses]
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rackforge"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, usage),
                    x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject)
                .public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                               critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False,
                    key_encipherment=not hasattr(public_key, "curve"),
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage(_ekus(usage)), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._key.public_key()), critical=False)
                .sign(self._key, hashes.SHA256()))
        return Issued(cert_pem=_cert_pem(cert), ca_pem=self.cert_pem)

    def verify(self, cert_pem):
        """True if ``cert_pem`` was signed by this CA and is valid now."""
        from cryptography.exceptions import InvalidSignature

        cert = _load_cert(cert_pem)
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        now = _now()
        return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def new_key_pem(key_type="ec"):
    """A new private key (PEM, PKCS#8): made on the node that keeps it, never sent."""
    return _key_pem(_generate_key(key_type))


def load_key(key_pem):
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CAError(detail="not a PEM private key (%s)" % exc) from None


def make_csr(name, key_pem=None, key_type="ec"):
    """(csr_pem, key_pem) for ``name``: what a node sends and what it keeps.

    ``key_pem``: the node's existing key (a resumed join presents the same one).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key_pem = key_pem or new_key_pem(key_type)
    key = load_key(key_pem)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM), key_pem


def certify_here(authority, name, addresses, usage, key_pem=None):
    """(cert_pem, key_pem) for a certificate whose key is made here, where the CA is
    (the seed's own, a controller's join service): through a CSR like any node's."""
    csr_pem, key_pem = make_csr(name, key_pem)
    return authority.issue(name, list(addresses), csr_pem, usage=usage).cert_pem, key_pem
