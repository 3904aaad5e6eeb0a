"""The one CRI call the registry tests need, ``ImageService/PullImage``, without grpc or crictl.

A unary gRPC call over HTTP/2 (h2c) on containerd's unix socket, written by hand: the
connection preface, SETTINGS (and its ack), one HEADERS frame (HPACK literals, no Huffman,
no table) and one DATA frame with the protobuf request. The answer is read frame by frame:
a DATA frame carries the ``PullImageResponse`` (its ``image_ref``, the image's config
digest); a call that fails ends without one (the reason is in containerd's log, because
Go's HPACK encoder Huffman-codes ``grpc-message`` and this reader decodes no HPACK).
This is kubelet's own path: the CRI plugin's ``registry.config_path``, not ``ctr``'s.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    """A header field as "literal without indexing, new name" (RFC 7541 6.2.2), no Huffman."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v


def _proto_string(field: int, value: bytes) -> bytes:
    return bytes([field << 3 | 2]) + _varint(len(value)) + value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("containerd closed the connection")
        buf += chunk
    return buf


def pull_image(socket_path: Path, ref: str, *, timeout: float = 120.0) -> str | None:
    """CRI PullImage(ref): the image's id (config digest), or None when the pull failed."""
    # PullImageRequest{image: ImageSpec{image: ref}}
    request = _proto_string(1, _proto_string(1, ref.encode()))
    message = b"\x00" + struct.pack(">I", len(request)) + request
    headers = b"".join(_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", "/runtime.v1.ImageService/PullImage"),
        (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(PREFACE + _frame(SETTINGS, 0, 0) + _frame(HEADERS, END_HEADERS, 1, headers)
                     + _frame(DATA, END_STREAM, 1, message))
        body = b""
        while True:
            head = _recv_exact(sock, 9)
            length = int.from_bytes(head[:3], "big")
            kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = _recv_exact(sock, length)
            if kind == SETTINGS and not flags & ACK:
                sock.sendall(_frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                sock.sendall(_frame(PING, ACK, 0, payload))
            elif kind == GOAWAY or (kind == RST_STREAM and stream == 1):
                return None
            elif kind == DATA and stream == 1:
                body += payload
                if payload:
                    sock.sendall(_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload)))
                                 + _frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", len(payload))))
            if stream == 1 and kind in (DATA, HEADERS) and flags & END_STREAM:
                break
    if len(body) < 5:
        return None  # trailers only: the call failed
    response = body[5:5 + int.from_bytes(body[1:5], "big")]
    if not response or response[0] != 0x0A:  # field 1 (image_ref), length-delimited
        return None
    n, i = _read_varint(response, 1)
    return response[i:i + n].decode()
