"""The cluster's certificate authority and the nodes' HTTPS certificate (``idsim up --tls``).

Files, all in ``<data>/pki/`` (``directory(data_dir)``):

    ca.key    the CA's private key (mode 0600); read only by ``ensure``, in the launcher
    ca.crt    the CA's certificate: what clients trust (pyhandle's ``HTTPS_verify``)
    node.key  the nodes' private key (mode 0600); host processes read it
    node.crt  the nodes' certificate, signed by the CA, for every host address of the topology

Two halves. Pure (``ca_certificate``, ``node_certificate``, ``subject_names``, ``needs_new``):
build or judge certificate objects from keys, names and the time ``now`` given, no I/O.
Files (``ensure``, ``node_tls``, ``server_context``, ``client_context``): make what is
missing, reuse what is there; load what host processes and clients use.

Invariants:
- A CA that is there is reused (restarts keep the trust clients were given) while it is valid
  at ``now`` for at least ``RENEW_BEFORE``; only then is a new one made.
- The node certificate is reissued when it does not name every host (``subject_names``), was
  not signed by the current CA, or expires within ``RENEW_BEFORE``; otherwise it is reused.
- Keys are written 0600 from their creation on (``os.open`` with the mode), atomically.
- The CA's key never leaves ``<data>/pki``: no certificate or context carries it, host
  processes never read it.
- Names: every topology host (an IP literal as an IP SAN, else a DNS SAN), plus 127.0.0.1,
  ::1 and DNS ``localhost``, so ``https://127.0.0.1:…`` and ``https://localhost:…`` verify.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Certificate lifetimes: properties of the files made here, not node tunables.
CA_VALIDITY = dt.timedelta(days=3650)
NODE_VALIDITY = dt.timedelta(days=397)       # the longest browsers accept for a server cert
RENEW_BEFORE = dt.timedelta(days=30)         # reissue a certificate this close to its end
BACKDATE = dt.timedelta(minutes=5)           # not_valid_before, for clocks slightly behind
ALWAYS = ("127.0.0.1", "::1", "localhost")   # names every node certificate carries

Name = ipaddress.IPv4Address | ipaddress.IPv6Address | str


@dataclass(frozen=True)
class Files:
    """Where the PKI of one data directory lives."""
    dir: Path

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def node_key(self) -> Path:
        return self.dir / "node.key"

    @property
    def node_cert(self) -> Path:
        return self.dir / "node.crt"


def directory(data_dir: str | Path) -> Files:
    return Files(Path(data_dir) / "pki")


# ------------------------------------------------------------------ pure: certificate objects

def new_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key: small, and the cheapest TLS handshake of the common choices."""
    return ec.generate_private_key(ec.SECP256R1())


def subject_names(hosts: Iterable[str]) -> list[Name]:
    """The names a node certificate must carry for ``hosts``: IP literals as addresses (v6
    brackets removed), anything else as a DNS name, plus ``ALWAYS``; no duplicates, sorted."""
    out: set[Name] = set()
    for host in (*hosts, *ALWAYS):
        host = host.strip("[]")
        try:
            out.add(ipaddress.ip_address(host))
        except ValueError:
            out.add(host.lower())
    return sorted(out, key=lambda n: (isinstance(n, str), str(n)))


def _general_names(names: Iterable[Name]) -> list[x509.GeneralName]:
    return [x509.DNSName(n) if isinstance(n, str) else x509.IPAddress(n) for n in names]


def ca_certificate(key: ec.EllipticCurvePrivateKey, now: dt.datetime,
                   title: str = "idsim cluster CA") -> x509.Certificate:
    """A self-signed CA certificate for ``key``, valid from ``now`` (less ``BACKDATE``)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, title),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "idsim")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))


def node_certificate(key: ec.EllipticCurvePrivateKey, names: list[Name],
                     ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                     now: dt.datetime) -> x509.Certificate:
    """A server certificate for ``key`` naming ``names`` (subjectAltName), signed by the CA."""
    first = str(names[0]) if names else "idsim node"
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "idsim")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + NODE_VALIDITY, ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))


def names_of(cert: x509.Certificate) -> set[Name]:
    """The subjectAltName entries of ``cert`` (empty when it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | set(
        san.get_values_for_type(x509.IPAddress))


def needs_new(cert: x509.Certificate, now: dt.datetime, *, issuer: x509.Certificate | None = None,
              names: Iterable[Name] = ()) -> bool:
    """Whether ``cert`` must be replaced at ``now``: not yet valid, ending within
    ``RENEW_BEFORE``, missing one of ``names``, or (given ``issuer``) not signed by it."""
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - RENEW_BEFORE:
        return True
    if not set(names) <= names_of(cert):
        return True
    if issuer is not None:
        try:
            cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            return True
    return False


# ------------------------------------------------------------------ files

def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically, the file carrying ``mode`` from its creation on."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load(files: Files, key_path: Path, cert_path: Path):
    """(key, cert) read from files, or None when either is missing, unreadable or they do not
    belong together."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError, TypeError):
        return None
    if cert.public_key() != key.public_key():
        return None
    return key, cert


def ensure(files: Files, hosts: Iterable[str], now: dt.datetime) -> Files:
    """Make the CA and the node certificate for ``hosts`` in ``files.dir`` where missing or
    due (see the module's invariants), reuse them otherwise. ``now`` is timezone-aware."""
    files.dir.mkdir(parents=True, exist_ok=True)
    files.dir.chmod(0o700)
    names = subject_names(hosts)
    have = _load(files, files.ca_key, files.ca_cert)
    if have is None or needs_new(have[1], now):
        ca_key = new_key()
        ca_cert = ca_certificate(ca_key, now)
        _write(files.ca_key, _key_bytes(ca_key), 0o600)
        _write(files.ca_cert, _cert_bytes(ca_cert), 0o644)
    else:
        ca_key, ca_cert = have
    node = _load(files, files.node_key, files.node_cert)
    if node is None or needs_new(node[1], now, issuer=ca_cert, names=names):
        key = new_key() if node is None else node[0]
        _write(files.node_key, _key_bytes(key), 0o600)
        _write(files.node_cert, _cert_bytes(node_certificate(key, names, ca_key, ca_cert, now)),
               0o644)
    return files


@dataclass(frozen=True)
class NodeTls:
    """What a host process serving ``https`` addresses uses: ``server`` (the node certificate
    and key) and ``client`` (verifies ``https://`` nodes with the cluster CA)."""
    server: ssl.SSLContext
    client: ssl.SSLContext


def node_tls(data_dir: str | Path) -> NodeTls:
    """``NodeTls`` from ``<data>/pki`` (made by the launcher's ``ensure``; the CA's key is not
    read). RuntimeError when there is no node certificate."""
    files = directory(data_dir)
    if not files.node_cert.exists():
        raise RuntimeError(f"the topology serves https but {files.dir} holds no node "
                           "certificate (idsim up --tls makes it)")
    return NodeTls(server_context(files), client_context(files.ca_cert))


def server_context(files: Files) -> ssl.SSLContext:
    """What a node serves HTTPS with: the node certificate and key (never the CA's key)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.node_cert, files.node_key)
    return ctx


def client_context(ca_file: str | Path) -> ssl.SSLContext:
    """A verifying client context that trusts the cluster CA (and the system's roots)."""
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def client_context_for(data_dir: str | Path) -> ssl.SSLContext | None:
    """``client_context`` for the cluster CA of ``data_dir``, None when it has none."""
    ca = directory(data_dir).ca_cert
    return client_context(ca) if ca.exists() else None
