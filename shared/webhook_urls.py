"""Client webhook URLs: which we accept (at registration) and which addresses we may connect to (at
every delivery), so that a client cannot make us call our own network (SSRF).

Pure: no DNS here. Registration checks the URL's form and any literal address; the delivery side
resolves the host itself and checks every resolved address with `is_public_address` before it
connects (notify's resolver), which also defeats DNS rebinding.

Development mode (`HALA_ENV=development`, used by `make run` and the tests) also allows plain
http to loopback, so local receivers work.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048

# Ranges `ipaddress`'s own flags miss or that we refuse on purpose (the reference's list: CGNAT,
# NAT64, 6to4, documentation, discard, SRv6, benchmarking).
_DENIED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "2002::/16",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
    )
)


class UnacceptableUrl(ValueError):
    """Why a URL cannot be an endpoint: `code` is machine-readable, the message says it plainly."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EndpointUrl:
    url: str
    scheme: str
    host: str
    port: int


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return address


def is_public_address(host: str) -> bool:
    """True for a globally routable unicast address; False for loopback, private, link-local
    (cloud metadata), multicast, reserved, CGNAT, NAT64, documentation ranges, or not an IP."""
    address = _address(host)
    if address is None:
        return False
    if (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    ):
        return False
    return not any(
        address in network for network in _DENIED_NETWORKS if network.version == address.version
    )


def is_loopback_address(host: str) -> bool:
    address = _address(host)
    return address is not None and address.is_loopback


def check_endpoint_url(url: str, *, allow_loopback_http: bool) -> EndpointUrl:
    """The URL, if a client may register it: https (or, in development, http to loopback), no
    credentials, a host name or a public address. Raises UnacceptableUrl."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnacceptableUrl("invalid_url", f"the url must be 1 to {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnacceptableUrl("invalid_url", f"the url cannot be parsed: {exc}") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("https", "http") or not host:
        raise UnacceptableUrl("invalid_url", "the url must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise UnacceptableUrl("invalid_url", "the url must not carry credentials")
    if parts.fragment:
        raise UnacceptableUrl("invalid_url", "the url must not have a fragment")
    loopback = host == "localhost" or is_loopback_address(host)
    if loopback and allow_loopback_http:
        return EndpointUrl(url, scheme, host, port or (443 if scheme == "https" else 80))
    if scheme != "https":
        raise UnacceptableUrl("insecure_url", "the url must use https")
    if loopback or host.endswith(".localhost"):
        raise UnacceptableUrl("private_address", "the url must not point at a loopback address")
    if _address(host) is not None and not is_public_address(host):
        raise UnacceptableUrl(
            "private_address",
            "the url must not point at a private, loopback, link-local or reserved address",
        )
    return EndpointUrl(url, scheme, host, port or 443)
