"""The local CA (tools/pki.py) and the one way services serve HTTPS (shared/http.py): a
certificate the strictest client context accepts, kept while good, replaced when it no longer
fits; a plain-HTTP client gets nothing from the TLS port."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from shared.http import server_ssl_context, start_site
from shared.ports import free_loopback_port
from tools import pki


def _strict_client(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    # What Python 3.13 sets by default: a leaf without an Authority Key Identifier fails.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


async def test_a_service_serves_https_with_a_certificate_of_the_local_ca(tmp_path: Path) -> None:
    issued = pki.issue(tmp_path, "ingest")
    app = web.Application()

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", hello)
    port = free_loopback_port()
    runner = await start_site(
        app, "127.0.0.1", port, server_ssl_context(str(issued.cert), str(issued.key))
    )
    try:
        connector = aiohttp.TCPConnector(ssl=_strict_client(issued.ca))
        async with aiohttp.ClientSession(connector=connector) as session:
            for host in ("localhost", "127.0.0.1"):  # both names of the certificate
                async with session.get(f"https://{host}:{port}/") as resp:
                    assert (resp.status, await resp.text()) == (200, "hello")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
                await session.get(f"http://127.0.0.1:{port}/")
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not trusted
                await session.get(f"https://localhost:{port}/")
    finally:
        await runner.cleanup()


def test_keys_are_pkcs8_files_only_their_owner_reads(tmp_path: Path) -> None:
    issued = pki.issue(tmp_path, "kafka", bundle=True)
    assert issued.bundle is not None
    for secret in (issued.key, issued.bundle, tmp_path / "ca-key.pem"):
        assert secret.stat().st_mode & 0o077 == 0
    assert issued.key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    chain = x509.load_pem_x509_certificates(
        issued.bundle.read_bytes().split(b"-----END PRIVATE KEY-----\n", 1)[1]
    )
    assert [c.subject for c in chain][1] == chain[0].issuer  # key + leaf + CA


def test_a_good_certificate_is_kept_and_one_that_no_longer_fits_is_replaced(tmp_path: Path) -> None:
    first = pki.issue(tmp_path, "status").cert.read_bytes()
    assert pki.issue(tmp_path, "status").cert.read_bytes() == first
    other_hosts = pki.issue(tmp_path, "status", ("status", "localhost")).cert.read_bytes()
    assert other_hosts != first
    later = datetime.now(UTC) + timedelta(days=pki.LEAF_DAYS - 1)  # inside the renewal week
    renewed = pki.issue(tmp_path, "status", ("status", "localhost"), now=later)
    assert renewed.cert.read_bytes() != other_hosts


def test_leaves_can_be_signed_by_a_ca_kept_elsewhere(tmp_path: Path) -> None:
    shared, ca = tmp_path / "shared", tmp_path / "ca"
    issued = pki.issue(shared, "ingest", ca_dir=ca)
    assert (ca / "ca-key.pem").exists() and not (shared / "ca-key.pem").exists()
    assert issued.ca.read_bytes() == (ca / "ca.pem").read_bytes()
    leaf = x509.load_pem_x509_certificates(issued.cert.read_bytes())[0]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(issued.ca.read_bytes()))
