"""Addresses, routes and links through rtnetlink, with the standard library only.

mke's own code never executes the host's ``ip``: a kernel-only host has none. This
module speaks the few rtnetlink requests mke needs (dump addresses and links, ask the
kernel which source address reaches a destination, list/replace/delete routes of one
routing protocol, delete a link) over an ``AF_NETLINK`` socket of the network namespace
mke runs in.

Why not pyroute2 (the maintained library): importing it costs ~320 ms (measured with
``python -X importtime``), paid by every command that needs the host's address
(``mke token create``, ``kubeconfig``, ``server``, ``worker``), and it would add 0.5 MB
of packages to the runtime for six requests; this module needs only standard-library
modules that mke loads anyway.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

NETLINK_ROUTE = 0
# message types
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETLINK, RTM_DELLINK = 18, 17
RTM_GETADDR = 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_DELRULE, RTM_GETRULE = 33, 34
# flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
# attributes
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
FRA_SRC, FRA_TABLE = 2, 15
IFF_LOOPBACK = 0x8
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    """The kernel refused a request (errno and strerror as from the syscall)."""


class Address(NamedTuple):
    address: str
    prefixlen: int
    scope: int
    index: int


class Rule(NamedTuple):
    """A policy-routing rule (``ip rule``): ``from <source> lookup <table>``."""

    family: int
    source: str
    table: int
    raw: bytes  # the kernel's message, sent back to delete exactly this rule


class Route(NamedTuple):
    dst: str  # CIDR
    gateway: str
    protocol: int
    oif: int


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, data: bytes) -> bytes:
    return _RTATTR.pack(_RTATTR.size + len(data), kind) + data + b"\0" * (_align(len(data)) - len(data))


def _attrs(buf: bytes, offset: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(buf):
        length, kind = _RTATTR.unpack_from(buf, offset)
        if length < _RTATTR.size:
            break
        out.setdefault(kind & 0x3FFF, buf[offset + _RTATTR.size: offset + length])
        offset += _align(length)
    return out


def _ip(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw)


class _Socket:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> _Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes) -> Iterator[tuple[int, bytes]]:
        """Send one request; yield (type, payload) of each answer until done (raises NetlinkError)."""
        self.seq += 1
        seq = self.seq
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body
        self.sock.send(msg)
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, mflags, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    return
                payload = data[offset + _NLMSGHDR.size: offset + length]
                offset += _align(length)
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return  # an ACK
                yield mtype, payload
                if not mflags & NLM_F_MULTI:
                    return


# --------------------------------------------------------------------------- reading


def loopback_indexes() -> set[int]:
    out = set()
    with _Socket() as s:
        for _, p in s.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(p)
            if flags & IFF_LOOPBACK:
                out.add(index)
    return out


def addresses(family: int = socket.AF_UNSPEC) -> list[Address]:
    """Every address of every link, in the kernel's order (by link, then as added)."""
    out = []
    with _Socket() as s:
        for _, p in s.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(family, 0, 0, 0, 0)):
            fam, prefixlen, _flags, scope, index = _IFADDRMSG.unpack_from(p)
            a = _attrs(p, _IFADDRMSG.size)
            raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if raw and fam in (socket.AF_INET, socket.AF_INET6):
                out.append(Address(address=_ip(fam, raw), prefixlen=prefixlen, scope=scope, index=index))
    return out


def global_addresses() -> tuple[str, ...]:
    """The host's global-scope addresses on links other than loopback, IPv4 first."""
    lo = loopback_indexes()
    found = [a for a in addresses() if a.scope == RT_SCOPE_UNIVERSE and a.index not in lo]
    v4 = [a.address for a in found if ipaddress.ip_address(a.address).version == 4]
    v6 = [a.address for a in found if ipaddress.ip_address(a.address).version == 6]
    return tuple(dict.fromkeys(v4 + v6))


def route_source(destination: str) -> str | None:
    """The local address the kernel would use to reach ``destination`` (like ``ip route get``)."""
    ip = ipaddress.ip_address(destination)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    body = _RTMSG.pack(family, ip.max_prefixlen, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, ip.packed)
    try:
        with _Socket() as s:
            for _, p in s.request(RTM_GETROUTE, 0, body):
                src = _attrs(p, _RTMSG.size).get(RTA_PREFSRC)
                if src:
                    return _ip(family, src)
    except OSError:
        return None  # no route (ENETUNREACH) or no netlink here
    return None


def routes(protocol: int, family: int = socket.AF_INET) -> list[Route]:
    """Routes of the main table set by routing protocol ``protocol`` (e.g. mke's 77)."""
    out = []
    with _Socket() as s:
        for _, p in s.request(RTM_GETROUTE, NLM_F_DUMP, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            fam, dst_len, _src_len, _tos, table, proto, _scope, _type, _flags = _RTMSG.unpack_from(p)
            a = _attrs(p, _RTMSG.size)
            if proto != protocol or a.get(RTA_TABLE, struct.pack("=I", table))[:4] != struct.pack("=I", RT_TABLE_MAIN):
                continue
            dst = _ip(fam, a[RTA_DST]) if RTA_DST in a else ("0.0.0.0" if fam == socket.AF_INET else "::")
            gw = _ip(fam, a[RTA_GATEWAY]) if RTA_GATEWAY in a else ""
            oif = struct.unpack("=I", a[RTA_OIF])[0] if RTA_OIF in a else 0
            out.append(Route(dst=f"{dst}/{dst_len}", gateway=gw, protocol=proto, oif=oif))
    return out


def _inside(cidr: str, networks: list[str]) -> bool:
    """``cidr`` lies within one of ``networks`` (of its own IP version)."""
    net = ipaddress.ip_network(cidr, strict=False)
    return any(net.version == n.version and net.subnet_of(n)  # type: ignore[arg-type]
               for n in (ipaddress.ip_network(x, strict=False) for x in networks))


def routes_in(networks: list[str], protocol: int) -> list[Route]:
    """Routes of ``protocol`` (main table) whose destination lies inside one of ``networks``."""
    return [r for family in (socket.AF_INET, socket.AF_INET6) for r in routes(protocol, family)
            if _inside(r.dst, networks)]


def rules_in(networks: list[str], table: int) -> list[Rule]:
    """Rules looking up ``table`` whose source lies inside one of ``networks`` (not ``from all``)."""
    return [r for r in rules(table) if r.source != "all" and _inside(r.source, networks)]


def rules(table: int) -> list[Rule]:
    """Policy-routing rules (both families) that look up routing table ``table``."""
    out = []
    with _Socket() as s:
        for family in (socket.AF_INET, socket.AF_INET6):
            for _, p in s.request(RTM_GETRULE, NLM_F_DUMP, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
                fam, _dst_len, src_len, _tos, tbl, *_ = _RTMSG.unpack_from(p)
                a = _attrs(p, _RTMSG.size)
                t = struct.unpack("=I", a[FRA_TABLE][:4])[0] if FRA_TABLE in a else tbl
                if t != table:
                    continue
                src = f"{_ip(fam, a[FRA_SRC])}/{src_len}" if FRA_SRC in a else "all"
                out.append(Rule(family=fam, source=src, table=t, raw=p))
    return out


def delete_rule(rule: Rule) -> bool:
    """``ip rule del`` of exactly ``rule`` (as ``rules`` read it); False when it was gone."""
    try:
        with _Socket() as s:
            list(s.request(RTM_DELRULE, NLM_F_ACK, rule.raw))
        return True
    except NetlinkError as e:
        if e.errno in (errno.ESRCH, errno.ENOENT):
            return False
        raise


def link_names() -> list[str]:
    """The names of every link in this network namespace."""
    out = []
    with _Socket() as s:
        for _, p in s.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            name = _attrs(p, _IFINFOMSG.size).get(IFLA_IFNAME)
            if name:
                out.append(name.rstrip(b"\0").decode(errors="replace"))
    return out


def link_index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


# --------------------------------------------------------------------------- changing


def _route_body(cidr: str, protocol: int, gateway: str | None) -> bytes:
    net = ipaddress.ip_network(cidr)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    body = _RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, protocol, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    body += _attr(RTA_DST, net.network_address.packed)
    if gateway:
        body += _attr(RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
    return body


def replace_route(cidr: str, via: str, protocol: int) -> None:
    """``ip route replace CIDR via VIA proto PROTOCOL`` (raises NetlinkError)."""
    with _Socket() as s:
        list(s.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, _route_body(cidr, protocol, via)))


def delete_route(cidr: str, protocol: int) -> bool:
    """Delete the route to ``cidr`` of ``protocol``; False when there was none."""
    try:
        with _Socket() as s:
            list(s.request(RTM_DELROUTE, NLM_F_ACK, _route_body(cidr, protocol, None)))
        return True
    except NetlinkError as e:
        if e.errno in (errno.ESRCH, errno.ENOENT):
            return False
        raise


def flush_routes(protocol: int) -> int:
    """Delete every route of ``protocol`` (both families); returns how many."""
    n = 0
    for family in (socket.AF_INET, socket.AF_INET6):
        for r in routes(protocol, family):
            n += delete_route(r.dst, protocol)
    return n


def delete_link(name: str) -> bool:
    """``ip link delete NAME``; False when no such link exists."""
    index = link_index(name)
    if index is None:
        return False
    try:
        with _Socket() as s:
            list(s.request(RTM_DELLINK, NLM_F_ACK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)))
        return True
    except NetlinkError as e:
        if e.errno == errno.ENODEV:
            return False
        raise
