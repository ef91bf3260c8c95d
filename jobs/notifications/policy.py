"""Which URLs the server may call: the guard that keeps users from reaching internal services.

Unless settings.BATCHSITE_WEBHOOK_ALLOW_PRIVATE (which follows DEBUG) is on, a target whose host
resolves to a private, loopback, link-local or otherwise non-public address is refused, unless
its host name or a network holding the address is listed in settings.BATCHSITE_WEBHOOK_ALLOW. Every address the host resolves to is checked (a name with one
public and one private address is refused), at creation and again before each delivery, since
DNS answers change.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django import forms
from django.conf import settings


class UrlRefused(ValueError):
    """The URL is not allowed as a webhook target; the message says why."""


def _allow_list() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    hosts: set[str] = set()
    networks = []
    for entry in settings.BATCHSITE_WEBHOOK_ALLOW:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower().rstrip("."))
    return hosts, networks


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"The host {host!r} does not resolve ({exc}).") from None
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str) -> None:
    """Raise UrlRefused unless `url` is an http(s) URL the policy lets the server call."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("Only http and https URLs are allowed.")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UrlRefused("The URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlRefused("The URL has an invalid port.") from None
    if settings.BATCHSITE_WEBHOOK_ALLOW_PRIVATE:
        return
    allowed_hosts, allowed_networks = _allow_list()
    if host in allowed_hosts:
        return
    for text in resolve(host, port):
        address = ipaddress.ip_address(text.split("%")[0])
        if any(address in network for network in allowed_networks):
            continue
        if _is_internal(address):
            raise UrlRefused(
                f"{host} resolves to {address}, a private, loopback or link-local address; "
                "such targets must be listed in BATCHSITE_WEBHOOK_ALLOW."
            )


def validate_webhook_url(url: str) -> None:
    """The form validator (settings.BATCHSITE_WEBHOOK_URL_VALIDATORS): a field error when refused."""
    try:
        check_url(url)
    except UrlRefused as exc:
        raise forms.ValidationError(str(exc), code="refused") from None
