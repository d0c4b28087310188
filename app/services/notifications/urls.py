"""Which webhook URLs consentd calls: https to public addresses only (SSRF), checked after DNS resolution.

A URL's host is resolved and every address it resolves to must be global (not private, loopback, link-local such as
169.254.169.254, multicast, reserved or unspecified); decimal, octal and hex spellings of an address resolve to the
address they spell, so they are caught too. Delivery then connects to an address checked here, naming the host for
TLS (SNI and the certificate check) and in `Host`: a DNS answer that changes between the check and the connection
(rebinding) is never followed. `CONSENTD_WEBHOOK_ALLOW_HOSTS` lists exceptions by host exactly as written in the URL
(a local receiver: "127.0.0.1"); those may use http as well and are not resolved here.
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from app.errors import Unprocessable


@dataclass(frozen=True, slots=True)
class Target:
    """Where one delivery connects: the URL to request (an address in place of the host, unless allowed by name),
    the host to name for TLS and the `Host` header (both None: the URL's own)."""

    url: str
    sni: str | None = None
    host_header: str | None = None


def _refuse(reason: str) -> Unprocessable:
    return Unprocessable(f"consentd will not call this URL: {reason}", loc=["body", "url"])


def parse(url: str, allow_hosts: list[str]) -> tuple[str, str, int | None, bool]:
    """(scheme, host, port, allowed) of a webhook URL; Unprocessable for one consentd will never call."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse("it is not a URL") from exc
    host = (parts.hostname or "").lower()
    if not host:
        raise _refuse("it has no host")
    if parts.username or parts.password:
        raise _refuse("it carries credentials (put a secret in the path, or verify the signature)")
    allowed = host in {h.lower().strip("[]") for h in allow_hosts}
    if parts.scheme != "https" and not (allowed and parts.scheme == "http"):
        raise _refuse("only https is called (http only for a host in CONSENTD_WEBHOOK_ALLOW_HOSTS)")
    return parts.scheme, host, port, allowed


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve(url: str, allow_hosts: list[str]) -> Target:
    """The target of a delivery to `url`, its host resolved and every address checked; Unprocessable for a URL
    consentd will not call (a 422 at the PUT; a failed attempt at delivery)."""
    scheme, host, port, allowed = parse(url, allow_hosts)
    if allowed:
        return Target(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _refuse(f"its host does not resolve ({exc.__class__.__name__})") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    refused = [a for a in addresses if not is_public(a)]
    if not addresses or refused:
        raise _refuse(f"its host resolves to an address that is not public ({', '.join(refused) or 'none'})")
    address = addresses[0]
    netloc = f"[{address}]" if ":" in address else address
    parts = urlsplit(url)
    named = f"[{host}]" if ":" in host else host
    return Target(
        urlunsplit((scheme, f"{netloc}:{port}" if port else netloc, parts.path or "/", parts.query, "")),
        sni=host, host_header=f"{named}:{port}" if port else named,
    )
