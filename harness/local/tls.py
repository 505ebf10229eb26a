"""A local certificate authority and the server certificates the local ALB serves.

The smoke gate verifies TLS the way a client of the real ALB does (chain to a trusted root, host name,
days to expiry), so the stand-in needs a certificate a client can verify against a CA it is given, and
on demand a bad one (about to expire, or for another host) to prove the gate catches it. The CA is made
once per directory and kept; server certificates are re-issued whenever the one on disk is not what the
caller asked for.
"""
from __future__ import annotations

import fcntl
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.util.files import write_atomic

CA_DAYS = 3650
# A certificate issued moments ago for `days` days expires a little sooner than "now + days" by the time
# it is checked again; within this grace it is still what was asked, so repeated calls reuse it.
REUSE_GRACE = timedelta(hours=1)
# Past this it lasts longer than asked: re-issued, so days=3 always yields a certificate about to expire.
LONGER_THAN_ASKED = timedelta(days=1)
BACKDATE = timedelta(minutes=5)  # tolerate a little clock skew between issuer and client


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # the CA certificate (PEM): what a client passes as --ca-bundle
    server_pem: Path  # server certificate then its private key: what HAProxy's `crt` takes


def ensure_certificates(directory: Path, host: str = "localhost", *, days: int = 365,
                        name: str = "server") -> Certificates:
    """The CA in `directory` (made on first use) and `<name>.pem`, a certificate for `host` valid `days`
    days from now that it signed. Safe to call again and from several processes at once."""
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, ca_key_file, server_pem = directory / "ca.pem", directory / "ca.key", directory / f"{name}.pem"
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ca_cert, ca_key = _load_ca(ca_file, ca_key_file) or _create_ca(ca_file, ca_key_file)
        if not _fits(server_pem, ca_cert, host, days):
            _issue(server_pem, ca_cert, ca_key, host, days)
    return Certificates(ca_file=ca_file, server_pem=server_pem)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _load_ca(cert_file: Path, key_file: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The existing CA, or None when it is missing, unreadable, expired or its halves do not match."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    if cert.not_valid_after_utc <= _now() + timedelta(days=1):
        return None
    return cert, key


def _create_ca(cert_file: Path, key_file: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dougust harness"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Dougust harness local CA")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - BACKDATE)
        .not_valid_after(_now() + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomic(key_file, _key_pem(key), mode=0o600)
    write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _fits(server_pem: Path, ca_cert: x509.Certificate, host: str, days: int) -> bool:
    """Whether the certificate on disk is for `host`, signed by this CA, and expires when asked."""
    try:
        cert = x509.load_pem_x509_certificate(server_pem.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    wanted = _now() + timedelta(days=days)
    return (set(names) == set(_alt_names(host))
            and wanted - REUSE_GRACE <= cert.not_valid_after_utc <= wanted + LONGER_THAN_ASKED)


def _alt_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    if host == "localhost":
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    return names


def _issue(server_pem: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, host: str,
           days: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - BACKDATE)
        .not_valid_after(_now() + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_alt_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # The leaf alone: the CA signs it directly, and servers (the ALB among them) never send the root.
    write_atomic(server_pem, cert.public_bytes(serialization.Encoding.PEM) + _key_pem(key), mode=0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
