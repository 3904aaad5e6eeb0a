"""Free TCP ports for a control plane started by a test."""

from __future__ import annotations

import random
import socket


def free_ports(n: int, *, host: str = "0.0.0.0") -> list[int]:
    """``n`` distinct free ports below the ephemeral range (konnectivity-server refuses an
    ephemeral agent port), each checked by binding it on ``host``."""
    out: list[int] = []
    rng = random.Random()
    while len(out) < n:
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        if port not in out:
            out.append(port)
    return out
