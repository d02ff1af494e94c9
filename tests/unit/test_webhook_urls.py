"""Which client webhook URLs are accepted, and which addresses may be connected to (SSRF guard)."""

from __future__ import annotations

import pytest

from shared.webhook_urls import UnacceptableUrl, check_endpoint_url, is_public_address


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "198.18.0.1",
        "192.0.2.10",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "2001:db8::1",
        "not-an-ip",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://example.com/hook", "insecure_url"),
        ("ftp://example.com/hook", "invalid_url"),
        ("https://user:pw@example.com/hook", "invalid_url"),
        ("https://127.0.0.1/hook", "private_address"),
        ("https://localhost/hook", "private_address"),
        ("https://[::ffff:10.0.0.1]/hook", "private_address"),
        ("https://169.254.169.254/latest/meta-data", "private_address"),
        ("https://example.com:99999/hook", "invalid_url"),
        ("/relative", "invalid_url"),
        ("", "invalid_url"),
    ],
)
def test_registration_refuses_with_a_code(url: str, code: str) -> None:
    with pytest.raises(UnacceptableUrl) as refused:
        check_endpoint_url(url, allow_loopback_http=False)
    assert refused.value.code == code


def test_https_host_names_are_accepted_and_resolved_later() -> None:
    checked = check_endpoint_url(
        "https://hooks.example.com/whatsapp?x=1", allow_loopback_http=False
    )
    assert (checked.host, checked.port, checked.scheme) == ("hooks.example.com", 443, "https")


def test_development_mode_allows_loopback_http_only() -> None:
    assert check_endpoint_url("http://127.0.0.1:9000/h", allow_loopback_http=True).port == 9000
    local = check_endpoint_url("http://localhost:9000/h", allow_loopback_http=True)
    assert local.host == "localhost"
    with pytest.raises(UnacceptableUrl):
        check_endpoint_url("http://10.0.0.5/h", allow_loopback_http=True)
    with pytest.raises(UnacceptableUrl):
        check_endpoint_url("http://example.com/h", allow_loopback_http=True)
