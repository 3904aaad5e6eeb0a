"""Facts about this host that every role needs: its addresses, its node name, and the
address and URL under which this node's API is advertised.

Addresses come from rtnetlink (``mke.node.netlink``), never from the host's ``ip``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import TYPE_CHECKING, Any

from mke.node import netlink

if TYPE_CHECKING:
    from mke.config import ClusterConfig


def host_addresses() -> tuple[str, ...]:
    """The host's global unicast addresses on non-loopback links (IPv4 first); () when unknown."""
    try:
        return netlink.global_addresses()
    except OSError:
        return ()


def node_name() -> str:
    """The default node name: the host name's first label, lower case."""
    return socket.gethostname().split(".")[0].lower() or "mke"


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_node_name(name: str) -> str:
    """``--name``: a node name Kubernetes accepts (a lower-case RFC 1123 subdomain), or a UsageError."""
    from mke.errors import UsageError

    if len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        raise UsageError(f"--name {name!r}: a node name must be a lower-case DNS name (a-z 0-9 - ., "
                         "at most 253 characters, beginning and ending with a letter or digit)")
    return name


def url_host(address: str) -> str:
    """``address`` as the host part of a URL (IPv6 in brackets)."""
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


def advertised_address(cfg: ClusterConfig, addresses: tuple[str, ...] | None = None) -> str:
    """The address the API server advertises: ``api.address``, else the host's first address.

    Raises ConfigError when neither exists: a node must never silently advertise 127.0.0.1.
    """
    if cfg.api.address:
        return cfg.api.address
    addrs = host_addresses() if addresses is None else addresses
    if addrs:
        return addrs[0]
    from mke.errors import ConfigError

    raise ConfigError("api.address: this host has no global unicast address to advertise; "
                      "set api.address in mke.yaml (or bring up a network interface)")


def api_host(cfg: ClusterConfig, status: dict[str, Any] | None = None) -> str:
    """The host clients should use: ``api.externalAddress``, else the running node's advertised
    address (from its status file), else what this host would advertise."""
    return cfg.api.external_address or (status or {}).get("api_address") or advertised_address(cfg)


def api_url(cfg: ClusterConfig, status: dict[str, Any] | None = None) -> str:
    """``https://<api host>:<port>`` of the Kubernetes API for clients of this cluster."""
    port = (status or {}).get("api_port") or cfg.api.port
    return f"https://{url_host(api_host(cfg, status))}:{port}"


def mke_api_url(cfg: ClusterConfig, status: dict[str, Any] | None = None) -> str:
    """``https://<api host>:<mkeAPIPort>``: where joining controllers reach mke's own API."""
    return f"https://{url_host(api_host(cfg, status))}:{cfg.api.mke_api_port}"


def route_source(destination: str) -> str | None:
    """The local address the kernel uses to reach ``destination``."""
    return netlink.route_source(destination)


def node_address(api: str) -> str | None:
    """The node's InternalIP: the source address of the route towards the API server ``api``."""
    try:
        ip = str(ipaddress.ip_address(api))
    except ValueError:
        try:
            ip = socket.getaddrinfo(api, None)[0][4][0]
        except OSError:
            return None
    src = route_source(ip)
    if src is None or ipaddress.ip_address(src).is_loopback:
        return None
    return src
