"""Small real Go programs built on the host for the FIPS tests (Go 1.24+; no network).

``build_programs(dir)`` returns {label: path}: the same program built with
GOFIPS140=v1.0.0, without it, with GOFIPS140=latest, with a cgo-less boringcrypto label,
a program without crypto, and (with gcc) an externally linked static PIE and a dynamic one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

GO = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)

PROGRAM = """package main

import (
\t"crypto/fips140"
\t"crypto/sha256"
\t"fmt"
)

func main() {
\tfmt.Printf("fips140=%v %x\\n", fips140.Enabled(), sha256.Sum256([]byte("mke")))
}
"""
NO_CRYPTO = """package main

import "fmt"

func main() { fmt.Println("no crypto here") }
"""


def go_version() -> tuple[int, int]:
    if GO is None:
        return (0, 0)
    out = subprocess.run([GO, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout
    m = re.match(r"go(\d+)\.(\d+)", out.strip())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def have_go_fips() -> bool:
    return go_version() >= (1, 24)


def build(src: Path, out: Path, *, env: dict[str, str], ldflags: str = "-s -w", extra: tuple[str, ...] = ()) -> Path:
    base = {k: v for k, v in os.environ.items() if k not in ("GOFIPS140", "GOEXPERIMENT", "GODEBUG", "GOFLAGS")}
    full = {**base, "GOTOOLCHAIN": "local", "GOFLAGS": "-trimpath", "GOPROXY": "off", "GOWORK": "off",
            "CGO_ENABLED": "0", **env}
    subprocess.run([GO, "build", *extra, f"-ldflags={ldflags}", "-o", str(out), "."], cwd=src, env=full, check=True,
                   capture_output=True)
    return out


def build_programs(d: Path) -> dict[str, Path]:
    src = d / "src"
    src.mkdir(parents=True)
    (src / "go.mod").write_text("module example.com/fipshello\n\ngo 1.24\n")
    (src / "main.go").write_text(PROGRAM)
    nocrypto = d / "nocrypto"
    nocrypto.mkdir()
    (nocrypto / "go.mod").write_text("module example.com/nocrypto\n\ngo 1.24\n")
    (nocrypto / "main.go").write_text(NO_CRYPTO)
    bins = {
        "fips": build(src, d / "fips", env={"GOFIPS140": "v1.0.0"}),
        "fips-unstripped": build(src, d / "fips-unstripped", env={"GOFIPS140": "v1.0.0"}, ldflags=""),
        "plain": build(src, d / "plain", env={}),
        "latest": build(src, d / "latest", env={"GOFIPS140": "latest"}),
        "boring-nocgo": build(src, d / "boring-nocgo", env={"GOEXPERIMENT": "boringcrypto"}),
        "nocrypto-fips": build(nocrypto, d / "nocrypto-fips", env={"GOFIPS140": "v1.0.0"}),
    }
    if shutil.which("gcc"):
        # as runc: cgo, external linking, static PIE (the pclntab moves into .data.rel.ro)
        bins["fips-static-pie"] = build(src, d / "fips-static-pie", env={"GOFIPS140": "v1.0.0", "CGO_ENABLED": "1"},
                                        ldflags="-s -w -linkmode external -extldflags -static-pie",
                                        extra=("-buildmode=pie",))
        bins["fips-dynamic"] = build(src, d / "fips-dynamic", env={"GOFIPS140": "v1.0.0", "CGO_ENABLED": "1"},
                                     ldflags="-s -w -linkmode external")
    return bins
