"""A local certificate authority for development, tests and docker-compose: one CA, and server
certificates it signs for Kafka and the HTTPS services (PEM files, made with `cryptography`).

    python -m tools.pki issue DIR NAME [--host HOST ...] [--bundle]

creates DIR/ca.pem and DIR/ca-key.pem once, then DIR/NAME.pem (leaf + CA: the chain a server
presents) and DIR/NAME-key.pem, plus DIR/NAME-bundle.pem with `--bundle` (key + leaf + CA in one
file: the form Kafka's PEM keystore reads). Existing files are kept while they are valid for
more than a week, signed by DIR's CA and cover the hosts asked for; anything else is replaced.
Keys are unencrypted PKCS#8 (Kafka reads nothing else) in 0600 files; the CA key never leaves
DIR. Clients trust DIR/ca.pem (curl --cacert, KAFKA_SSL_CA_FILE, the system store).

EC P-256 keys; leaves carry SAN (DNS and IP), serverAuth, SKI and AKI: Python 3.13's default
client context (VERIFY_X509_STRICT) refuses a leaf without an Authority Key Identifier.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 825
LEAF_DAYS = 90
RENEW_BEFORE = timedelta(days=7)
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Issued:
    ca: Path  # the CA certificate clients trust
    cert: Path  # leaf + CA
    key: Path  # the leaf's PKCS#8 key (0600)
    bundle: Path | None  # key + leaf + CA (0600), for Kafka


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hala Whatsup (local)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, atomically (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _valid(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def ensure_ca(
    directory: Path, now: datetime | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA of `directory`, created when missing or about to expire."""
    now = now or datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    with contextlib.suppress(OSError, ValueError):
        cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and _valid(cert, now):
            return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    subject = _name("Hala Whatsup local CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(ca_path, _cert_pem(cert))
    return cert, key


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _current_leaf(
    cert_path: Path, key_path: Path, ca: x509.Certificate, hosts: Sequence[str], now: datetime
) -> bool:
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    leaf = chain[0]
    if not _valid(leaf, now) or leaf.issuer != ca.subject:
        return False
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if leaf.public_key() != key.public_key():
        return False
    have = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(have) == set(_san(hosts))


def issue(
    directory: Path,
    name: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    bundle: bool = False,
    ca_dir: Path | None = None,
    now: datetime | None = None,
) -> Issued:
    """A server certificate for `hosts` signed by the CA of `ca_dir` (default: `directory`),
    kept while still good. With a separate `ca_dir`, the CA's key stays there and only its
    certificate is copied to `directory`."""
    now = now or datetime.now(UTC)
    ca, ca_key = ensure_ca(ca_dir or directory, now)
    directory.mkdir(parents=True, exist_ok=True)
    if ca_dir is not None and ca_dir != directory:
        ca_pem = _cert_pem(ca)
        if not (directory / "ca.pem").exists() or (directory / "ca.pem").read_bytes() != ca_pem:
            _write_public(directory / "ca.pem", ca_pem)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    bundle_path = directory / f"{name}-bundle.pem"
    if not _current_leaf(cert_path, key_path, ca, hosts, now):
        key = ec.generate_private_key(ec.SECP256R1())
        ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=LEAF_DAYS))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        _write_public(cert_path, _cert_pem(leaf) + _cert_pem(ca))
        bundle_path.unlink(missing_ok=True)
    if bundle and not bundle_path.exists():
        _write_private(bundle_path, key_path.read_bytes() + cert_path.read_bytes())
    return Issued(
        ca=directory / "ca.pem",
        cert=cert_path,
        key=key_path,
        bundle=bundle_path if bundle else None,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.pki",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    issue_cmd = commands.add_parser("issue", help="a server certificate signed by DIR's CA")
    issue_cmd.add_argument("directory", type=Path, metavar="DIR")
    issue_cmd.add_argument("name", metavar="NAME")
    issue_cmd.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="HOST",
        help="DNS name or IP address (repeatable; default localhost and 127.0.0.1)",
    )
    issue_cmd.add_argument(
        "--bundle", action="store_true", help="also write NAME-bundle.pem (key + chain) for Kafka"
    )
    args = parser.parse_args(argv)
    issued = issue(
        args.directory, args.name, tuple(args.hosts or DEFAULT_HOSTS), bundle=args.bundle
    )
    print(
        f"ca={issued.ca}\ncert={issued.cert}\nkey={issued.key}"
        + (f"\nbundle={issued.bundle}" if issued.bundle else "")
    )


if __name__ == "__main__":
    main()
