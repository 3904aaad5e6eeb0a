"""Payload frames: how the embedded binaries are grouped, and each group compressed once.

A frame is a cached action: its key is the members' digests plus the codec parameters
(zstd level 19, long-distance matching, a window covering the whole frame, content
checksum); its output is one CAS blob. Layouts (``--payload-layout``, docs/payload.md):
``groups`` (default: one frame per role set), ``per-binary``, ``solid``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from build.action import Action
from build.cache import Cache, OutputFile
from build.errors import BundleError
from build.fsutil import CHUNK
from build.progress import human_bytes, log

ZSTD_LEVEL = 19
ZSTD_WINDOW_LOG = 31  # long-distance matching over a whole group; decode memory <= the group's size
LAYOUTS = ("groups", "per-binary", "solid")
DEFAULT_LAYOUT = "groups"
ROLE_ORDER = ("controller", "worker", "image")


def plan_frames(binaries: Iterable[dict[str, Any]], layout: str) -> list[tuple[str, list[str]]]:
    """Group binary names into frames: [(frame label, [names in frame order])].

    ``groups``: a controller frame and a worker frame, so that staging a role decodes
    only what that role runs. Binaries both roles run (kubectl) open the worker frame:
    decoding stops once the wanted binaries are out, so a controller decodes just that
    prefix, and the worker binaries after it still find its code within the window.
    Binaries of other roles (image) get frames of their own. Within a frame the biggest
    binaries come first: they share the most code.
    """
    if layout not in LAYOUTS:
        raise BundleError(f"unknown payload layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    items = [b for b in binaries if b.get("sha256")]
    order = sorted(items, key=lambda b: (-int(b["size"]), b["name"]))
    if layout == "per-binary":
        return [(b["name"], [b["name"]]) for b in sorted(items, key=lambda b: b["name"])]
    if layout == "solid":
        return [("all", [b["name"] for b in order])] if order else []
    groups: dict[str, list[str]] = {}
    shared = []
    for b in order:
        roles = tuple(r for r in ROLE_ORDER if r in b.get("roles", ())) or ("other",)
        if roles == ("controller", "worker"):
            shared.append(b["name"])
        else:
            groups.setdefault("+".join(roles), []).append(b["name"])
    if shared:
        groups["worker"] = shared + groups.get("worker", [])
    rank = {"controller": 0, "worker": 1}
    return [(k, v) for k, v in sorted(groups.items(), key=lambda kv: (rank.get(kv[0], 2), kv[0]))]


def zstd_identity(level: int = ZSTD_LEVEL) -> dict[str, Any]:
    import zstandard

    return {"python-zstandard": zstandard.__version__, "libzstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
            "level": level, "window_log": ZSTD_WINDOW_LOG, "checksum": True, "ldm": True, "threads": "n>=1"}


def compress_frame(cache: Cache, platform: str, members: list[dict[str, Any]], *, jobs: int,
                   level: int = ZSTD_LEVEL) -> tuple[OutputFile, int]:
    """The compressed blob of ``members`` concatenated, from the cache or made now."""
    import zstandard

    decoded = sum(int(m["size"]) for m in members)
    action = Action(mode="bundle-frame", component="+".join(m["name"] for m in members), platform=platform,
                    inputs={"codec": zstd_identity(level), "members": [[m["name"], m["sha256"], m["size"]] for m in members]})
    key = action.key()
    hit = cache.get(key)
    if hit is not None:
        return hit.outputs[0], decoded
    with cache.action_lock(key):
        hit = cache.get(key)
        if hit is not None:
            return hit.outputs[0], decoded
        t0 = time.monotonic()
        names = ", ".join(m["name"] for m in members)
        log("bundle", f"compressing {names} ({human_bytes(decoded)}, zstd -{level} --long={ZSTD_WINDOW_LOG})")
        params = zstandard.ZstdCompressionParameters.from_level(
            level, source_size=decoded, window_log=min(ZSTD_WINDOW_LOG, max(10, decoded.bit_length())),
            enable_ldm=True, write_checksum=True, write_content_size=True,
            # Always >= 1 worker: zstd's multi-threaded output does not depend on the count.
            threads=max(1, jobs),
        )
        cctx = zstandard.ZstdCompressor(compression_params=params)
        with cache.tempdir("frame-") as wd:
            out = Path(wd) / "frame.zst"
            corrupt: list[str] = []
            try:
                with open(out, "wb") as raw, cctx.stream_writer(raw, size=decoded, closefd=False) as w:
                    for m in members:
                        src = cache.cas.path(m["sha256"])
                        h = hashlib.sha256()
                        try:
                            with open(src, "rb") as f:
                                while chunk := f.read(CHUNK):
                                    h.update(chunk)
                                    w.write(chunk)
                        except FileNotFoundError:
                            raise BundleError(f"{m['name']}: blob {m['sha256']} is not in the cache; "
                                              "run the build again") from None
                        if h.hexdigest() != m["sha256"]:
                            corrupt.append(f"{m['name']}: cache blob {src} is corrupt")
                            break
            except zstandard.ZstdError:
                if not corrupt:
                    raise
            if corrupt:
                raise BundleError(f"{corrupt[0]}; run `nox -s cache -- verify` and build again")
            digest, size = cache.cas.put_file(out)
        result = cache.put(action, [OutputFile(name="frame.zst", sha256=digest, size=size, executable=False)],
                           {"seconds": round(time.monotonic() - t0, 3), "decoded": decoded})
        log("bundle", f"  {human_bytes(size)} ({100 * size / max(1, decoded):.1f}%) in {time.monotonic() - t0:.1f}s")
        return result.outputs[0], decoded
