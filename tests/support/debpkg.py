"""A tiny Debian source package and binary package, made by the tests (no network).

``mkehello 1.0-1``: an orig tarball holding a hand-written ``configure`` (POSIX sh, it
records --prefix and asks pkg-config for ``mkegreet``), a Makefile and hello.c; a debian
tarball whose quilt series patches hello.c; a format 3.0 (quilt) .dsc listing both.
``mkegreet-dev 2.0-1``: a .deb (ar: debian-binary, control.tar.xz, data.tar.xz) with a
header and a pkg-config file, like a -dev package carrying a static library.

Built with the real ``kind = "debian"`` path, the program prints ``mkehello 1.0 patched``
plus the greeting from the .deb's header, so the output proves that the patch was applied
and the sysroot was used.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

MTIME = 1700000000
CONFIGURE = """#!/bin/sh
# Minimal autoconf-like configure: --prefix, ignores the other options like autoconf does.
prefix=/usr/local
for arg in "$@"; do
  case "$arg" in
    --prefix=*) prefix="${arg#--prefix=}" ;;
  esac
done
greet_cflags=$(pkg-config --cflags mkegreet) || { echo "configure: mkegreet not found by pkg-config" >&2; exit 1; }
printf 'prefix = %s\\nGREET_CFLAGS = %s\\n' "$prefix" "$greet_cflags" > config.mk
echo "configured for $prefix"
"""

MAKEFILE = """include config.mk
all: mkehello
mkehello: hello.c
\t$(CC) $(CFLAGS) $(GREET_CFLAGS) $(LDFLAGS) -o mkehello hello.c
install: mkehello
\tmkdir -p $(prefix)/bin
\tcp mkehello $(prefix)/bin/mkehello
"""

HELLO_C = """#include <stdio.h>
#include <mkegreet.h>
int main(void) {
    printf("mkehello 1.0 %s\\n", "pristine");
    printf("%s\\n", MKEGREET);
    return 0;
}
"""

PATCH = """Description: say that Debian's patch was applied
--- a/hello.c
+++ b/hello.c
@@ -1,7 +1,7 @@
 #include <stdio.h>
 #include <mkegreet.h>
 int main(void) {
-    printf("mkehello 1.0 %s\\n", "pristine");
+    printf("mkehello 1.0 %s\\n", "patched");
     printf("%s\\n", MKEGREET);
     return 0;
 }
"""

GREET_H = '#define MKEGREET "greetings from the sysroot"\n'
GREET_PC = """prefix=/usr
includedir=${prefix}/include
Name: mkegreet
Description: test header
Version: 2.0
Cflags: -I${includedir}
"""


def _tar(files: dict[str, tuple[bytes, int]], fmt: str) -> bytes:
    """A deterministic tarball (fixed mtimes; gzip header without a timestamp)."""
    buf = io.BytesIO()
    raw = gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) if fmt == "gz" else buf
    with tarfile.open(fileobj=raw, mode="w" if fmt == "gz" else f"w:{fmt}") as tf:
        dirs = sorted({str(Path(n).parent) for n in files if str(Path(n).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tf.addfile(info)
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, MTIME
            tf.addfile(info, io.BytesIO(data))
    if raw is not buf:
        raw.close()
    return buf.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        assert len(header) == 60
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def make_packages(pool: Path, *, patch: str = PATCH) -> dict[str, Path]:
    """Write the source package (under pool/m/mkehello/) and the .deb (pool/m/mkegreet/)."""
    src_dir = pool / "m" / "mkehello"
    src_dir.mkdir(parents=True, exist_ok=True)
    orig = src_dir / "mkehello_1.0.orig.tar.gz"
    orig.write_bytes(_tar({"mkehello-1.0/configure": (CONFIGURE.encode(), 0o755),
                           "mkehello-1.0/Makefile": (MAKEFILE.encode(), 0o644),
                           "mkehello-1.0/hello.c": (HELLO_C.encode(), 0o644)}, "gz"))
    debian = src_dir / "mkehello_1.0-1.debian.tar.xz"
    debian.write_bytes(_tar({"debian/patches/series": (b"# the one patch\nsay-patched.patch\n", 0o644),
                             "debian/patches/say-patched.patch": (patch.encode(), 0o644),
                             "debian/changelog": (b"mkehello (1.0-1) unstable; urgency=medium\n", 0o644)}, "xz"))
    lines = "".join(f" {hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_size} {p.name}\n" for p in (orig, debian))
    dsc = src_dir / "mkehello_1.0-1.dsc"
    dsc.write_text("Format: 3.0 (quilt)\nSource: mkehello\nBinary: mkehello\nArchitecture: any\n"
                   f"Version: 1.0-1\nChecksums-Sha256:\n{lines}")
    deb_dir = pool / "m" / "mkegreet"
    deb_dir.mkdir(parents=True, exist_ok=True)
    data = _tar({"./usr/include/mkegreet.h": (GREET_H.encode(), 0o644),
                 "./usr/lib/x86_64-linux-gnu/pkgconfig/mkegreet.pc": (GREET_PC.encode(), 0o644)}, "xz")
    control = _tar({"./control": (b"Package: mkegreet-dev\nVersion: 2.0-1\nArchitecture: amd64\n", 0o644)}, "xz")
    deb = deb_dir / "mkegreet-dev_2.0-1_amd64.deb"
    deb.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", control), ("data.tar.xz", data)]))
    return {"dsc": dsc, "orig": orig, "debian": debian, "deb": deb}


def recipe_text(base_url: str) -> str:
    """A kind = "debian" recipe for mkehello whose URLs point at ``base_url`` (a local HTTP server)."""
    return f"""schema = 1
name = "mkehello"
version = "1.0"
license = "Apache-2.0"
homepage = "https://example.com/mkehello"

[[binary]]
name = "mkehello"
roles = ["worker"]
version_args = []
version_pattern = ""
links = ["mkehello-alias"]

[fetch]
available = false
reason = "test program, source only"

[source]
kind = "debian"
cflags = ["-Os"]
outputs = {{ mkehello = "bin/mkehello" }}

[[source.deb]]
name = "mkegreet-dev"
version = "2.0-1"
suite = "test"
url = "{base_url}/pool/m/mkegreet/mkegreet-dev_2.0-1_{{arch}}.deb"

[[source.package]]
name = "mkehello"
version = "1.0-1"
suite = "test"
dsc = "{base_url}/pool/m/mkehello/mkehello_1.0-1.dsc"
""".replace('version_args = []\nversion_pattern = ""\n', "")


def lock_pins(base_url: str, files: dict[str, Path]) -> dict[str, str]:
    """The ``debian`` lock entries of the fixture: URL -> sha256."""
    rel = {"dsc": "pool/m/mkehello/", "orig": "pool/m/mkehello/", "debian": "pool/m/mkehello/", "deb": "pool/m/mkegreet/"}
    return {f"{base_url}/{rel[k]}{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}
