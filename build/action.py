"""Actions: every input that changes an output, hashed into a canonical cache key.

Modelled on Bazel's remote-execution Action: the key is sha256 over canonical JSON
(sorted keys, no whitespace, schema-versioned, salted), never over paths or mtimes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

ACTION_SCHEMA = 1
# Bump (or set MKE_CACHE_SALT) to invalidate every cached action at once.
DEFAULT_SALT = "mke-1"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Action:
    """One unit of cached work: produce ``component``'s binaries for ``platform`` in ``mode``."""

    mode: str
    component: str
    platform: str
    # Everything else that changes the output: recipe fields, pinned source digests,
    # toolchain identity (builder image ID, Go version), flags (fips, ...), environment.
    inputs: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return {
            "schema": ACTION_SCHEMA,
            "salt": os.environ.get("MKE_CACHE_SALT", DEFAULT_SALT),
            "mode": self.mode,
            "component": self.component,
            "platform": self.platform,
            "inputs": self.inputs,
        }

    def key(self) -> str:
        return hashlib.sha256(canonical_json(self.document())).hexdigest()
