"""Small real Go programs built on the host for the FIPS tests (Go 1.24+; no network).

``build_programs(dir)`` returns {label: path}: the same program built with
GOFIPS140=v1.0.0, without it, with GOFIPS140=latest, with a cgo-less boringcrypto label,
a program without crypto, and (with gcc) an externally linked static PIE, a dynamic one
and a real BoringCrypto build (``build_boring``: what ``--fips-go=boring`` does).

The program prints ``fips140=<crypto/fips140.Enabled()> boring=<crypto/boring.Enabled()>
<sha256>``; ``crypto/boring`` exists only in a boringcrypto build (``BORING_FILE``).
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

// boringEnabled is crypto/boring.Enabled in a GOEXPERIMENT=boringcrypto build (boring.go).
var boringEnabled = func() bool { return false }

func main() {
\tfmt.Printf("fips140=%v boring=%v %x\\n", fips140.Enabled(), boringEnabled(), sha256.Sum256([]byte("mke")))
}
"""
BORING_FILE = """//go:build goexperiment.boringcrypto

package main

import "crypto/boring"

func init() { boringEnabled = boring.Enabled }
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


class BoringBuildError(Exception):
    """The host cannot build the BoringCrypto program (no Go 1.24+, no gcc, or the build failed)."""


def write_program(src: Path) -> Path:
    """The test program's module in ``src`` (main.go + boring.go)."""
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text("module example.com/fipshello\n\ngo 1.24\n")
    (src / "main.go").write_text(PROGRAM)
    (src / "boring.go").write_text(BORING_FILE)
    return src


def build_boring(src: Path, out: Path) -> Path:
    """The program as ``--fips-go=boring`` builds a component: GOEXPERIMENT=boringcrypto, cgo, static.

    Go ships BoringSSL's FIPS object (``crypto/internal/boring/syso``) for linux/amd64 and
    linux/arm64, so no network is needed; gcc links it. Raises BoringBuildError saying why not.
    """
    if GO is None or not have_go_fips():
        raise BoringBuildError(f"needs Go 1.24+ on the host (found {GO or 'no go'} {go_version()})")
    if not shutil.which("gcc"):
        raise BoringBuildError("needs gcc on the host: GOEXPERIMENT=boringcrypto links BoringSSL through cgo")
    from fips.settings import go_build_settings

    # what fips/toolchain.toml's [go.boring] adds to a recipe's build: GOEXPERIMENT=boringcrypto,
    # cgo on, -linkmode=external -extldflags=-static, tags netgo,osusergo
    changes = go_build_settings("boring")
    env = dict(changes.env) | {"CGO_ENABLED": "1" if changes.cgo else "0"}
    try:
        return build(src, out, env=env, ldflags=changes.apply_ldflags("-s -w"), extra=("-tags", ",".join(changes.tags)))
    except subprocess.CalledProcessError as e:
        raise BoringBuildError(f"GOEXPERIMENT=boringcrypto CGO_ENABLED=1 go build failed (exit {e.returncode}): "
                               f"{(e.stderr or b'').decode(errors='replace').strip()[-2000:]}") from e


def build_programs(d: Path) -> dict[str, Path]:
    src = write_program(d / "src")
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
        bins["boring"] = build_boring(src, d / "boring")
    return bins
