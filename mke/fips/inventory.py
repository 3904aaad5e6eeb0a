"""Every piece of cryptographic code in a FIPS Python runtime, accounted for, read from the staged files.

``crypto_inventory(root)`` reads every ELF file under the runtime's root (the staged runtime
at run time, ``mke fips check``; the assembled tree at build time, build/bundle/runtime.py)
and looks for cryptography two ways, without running anything:

- **linked**: a DT_NEEDED on a crypto library (OpenSSL's libcrypto/libssl, GnuTLS, Nettle,
  libgcrypt, libsodium, mbed TLS, wolfSSL, NSS, Kerberos' k5crypto, libxcrypt, ...);
- **embedded**: the marks a statically linked library's code leaves in the file: OpenSSL 3's
  fetch code names itself in its errors (``inner_evp_generic_fetch``: libcrypto, fips.so and
  the OpenSSL inside PyPI's cryptography wheel carry it), the names of OpenSSL's providers,
  BoringSSL's ``BORINGSSL_`` entry points, LibreSSL's version, the exported entry points of
  the others; CPython's built-in hash modules (``PyInit__md5`` ...). OpenSSL's version text
  alone is no mark: a Rust extension built against a shared libcrypto records the version
  it was built with (``OpenSSL 3.0.19 27 Jan 2026``), and mentions BoringSSL in its messages.

Each file is then held to its role (``ROLES``): fips/fips.so is the FIPS provider and links
no crypto library; lib/libcrypto.so.3 is the one OpenSSL; libssl, _hashlib, _ssl and
cryptography's Rust extension use that libcrypto and embed none; python3.11 carries CPython's
own hash modules, which mke/start.py blocks in a FIPS runtime. Any other file that links or
embeds cryptography, a second OpenSSL, or another provider is a problem.

The marks are for the libraries named above: hand-written crypto in some other library would
not be seen (the file list of the runtime is fixed by recipes/runtime/python.toml).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import struct
from pathlib import Path
from typing import Any

from mke.elf import ElfFile

#: DT_NEEDED sonames of cryptographic libraries (fnmatch patterns).
CRYPTO_SONAMES = ("libcrypto.so*", "libssl.so*", "libgnutls*.so*", "libnettle.so*", "libhogweed.so*",
                  "libgcrypt.so*", "libsodium.so*", "libmbedcrypto.so*", "libmbedtls.so*", "libmbedx509.so*",
                  "libwolfssl.so*", "libnss3.so*", "libsoftokn3.so*", "libfreebl*.so*", "libk5crypto.so*",
                  "libcrypt.so*", "libbotan*.so*", "libtomcrypt.so*", "libmd.so*", "libbearssl.so*")

#: What a statically linked crypto library's code leaves in a file: a literal that must occur
#: (found with bytes.find, fast enough for 100 MB Go binaries), then, for some, a pattern.
MARKS: dict[str, tuple[bytes, re.Pattern[bytes] | None]] = {
    "openssl": (b"inner_evp_generic_fetch", None),
    "openssl-default-provider": (b"OpenSSL Default Provider", None),
    "openssl-fips-provider": (b"OpenSSL FIPS Provider", None),
    "openssl-legacy-provider": (b"OpenSSL Legacy Provider", None),
    "boringssl": (b"BORINGSSL_", re.compile(rb"BORINGSSL_[a-z]")),
    "libressl": (b"LibreSSL ", re.compile(rb"LibreSSL \d+\.\d+\.\d+")),
    "gnutls": (b"gnutls_global_init", None),
    "nettle": (b"nettle_sha256_init", None),
    "libgcrypt": (b"gcry_check_version", None),
    "libsodium": (b"sodium_init", None),
    "mbedtls": (b"mbedtls_sha256", None),
    "wolfssl": (b"wolfSSL_Init", None),
    "nss": (b"NSS_Init", None),
    "ring": (b"ring_core_", re.compile(rb"ring_core_\d+_\d+_\d+_")),
    "cpython-hash-modules": (b"PyInit__", re.compile(rb"PyInit__(?:md5|sha1|sha256|sha512|sha2|sha3|blake2)\x00")),
}


def find_marks(buf: Any) -> dict[str, str]:
    """The crypto libraries whose code marks ``buf`` (bytes or an mmap): name -> the text found."""
    out = {}
    for name, (literal, pattern) in MARKS.items():
        if buf.find(literal) < 0:
            continue
        if pattern is None:
            out[name] = literal.decode()
        else:
            m = pattern.search(buf)
            if m:
                out[name] = m.group(0).rstrip(b"\0").decode(errors="replace")
    return out


#: OpenSSL's version text (reported with the facts; not a mark by itself, see above).
OPENSSL_VERSION_TEXT = re.compile(rb"OpenSSL \d+\.\d+\.\d+[a-z]?(?:-[\w.]+)? +\d{1,2} [A-Z][a-z]{2} \d{4}")


@dataclasses.dataclass(frozen=True)
class Role:
    """What one file of the runtime may link and embed, and what it is."""

    pattern: str  # fnmatch pattern on the path relative to the runtime's root
    what: str
    needs: frozenset[str] = frozenset()  # crypto sonames it must link (all of them)
    may_need: frozenset[str] = frozenset()  # crypto sonames it may link
    marks: frozenset[str] = frozenset()  # marks it must carry (all of them)


LIBCRYPTO = "libcrypto.so.3"
_USES = frozenset({LIBCRYPTO, "libssl.so.3"})
ROLES: tuple[Role, ...] = (
    Role("fips/fips.so", "the OpenSSL FIPS provider: the validated module (its digest is checked against "
         "provenance.json)", marks=frozenset({"openssl", "openssl-fips-provider"})),
    Role("lib/libcrypto.so.3", "the runtime's OpenSSL libcrypto (Debian bookworm libssl3): fetches every "
         "algorithm from a provider (fips, and base for encoders; its built-in default provider is not "
         "loaded), outside the module boundary", marks=frozenset({"openssl", "openssl-default-provider"})),
    Role("lib/libssl.so.3", "OpenSSL's TLS (Python's ssl module), all its crypto through libcrypto",
         needs=frozenset({LIBCRYPTO})),
    Role("lib/python3.11/lib-dynload/_hashlib.*.so", "hashlib/hmac, through libcrypto", needs=frozenset({LIBCRYPTO}),
         may_need=_USES),
    Role("lib/python3.11/lib-dynload/_ssl.*.so", "ssl, through libssl and libcrypto", needs=frozenset({LIBCRYPTO}),
         may_need=_USES),
    Role("lib/python3.11/site-packages/cryptography/hazmat/bindings/_rust*.so",
         "cryptography, built from its sdist against libcrypto.so.3 (carries no OpenSSL of its own)",
         needs=frozenset({LIBCRYPTO}), may_need=_USES),
    Role("bin/python3.11", "CPython, with its own hash modules built in (_md5, _sha1, _sha256, _sha512, _sha3, "
         "_blake2): blocked before anything imports them in a FIPS runtime (mke/start.py)",
         marks=frozenset({"cpython-hash-modules"})),
)


def _role(rel: str) -> Role | None:
    return next((r for r in ROLES if fnmatch.fnmatchcase(rel, r.pattern)), None)


def dt_needed(elf: ElfFile) -> list[str]:
    """The DT_NEEDED sonames of a parsed (``ElfFile.parse``) ELF file."""
    dyn, dynstr = elf.section_bytes(".dynamic"), elf.section_bytes(".dynstr")
    if dyn is None or dynstr is None:
        return []
    e = "<" if elf.little_endian else ">"
    entry = struct.Struct(e + ("qQ" if elf.bits == 64 else "iI"))
    strings = bytes(dynstr)
    out = []
    for off in range(0, len(dyn) - entry.size + 1, entry.size):
        tag, val = entry.unpack_from(dyn, off)
        if tag == 0:
            break
        if tag == 1:  # DT_NEEDED
            out.append(strings[val:strings.index(b"\0", val)].decode(errors="replace"))
    return out


def inspect_file(path: Path, rel: str) -> dict[str, Any] | None:
    """The crypto facts of one file (None: not an ELF file)."""
    data = path.read_bytes()
    try:
        elf = ElfFile.parse(data)
    except ValueError as e:
        return {"path": rel, "error": f"unreadable ELF file: {e}"}
    if elf is None:
        return None
    needed = dt_needed(elf)
    crypto_needed = sorted(n for n in needed if any(fnmatch.fnmatchcase(n, p) for p in CRYPTO_SONAMES))
    marks = find_marks(data)
    version = OPENSSL_VERSION_TEXT.search(data)
    return {"path": rel, "crypto_needed": crypto_needed, "marks": marks,
            "openssl_version_text": version.group(0).decode() if version else None}


def crypto_inventory(root: Path) -> dict[str, Any]:
    """Every ELF file under ``root`` that links or embeds cryptography, with its role, and the problems."""
    files: list[dict[str, Any]] = []
    problems: list[str] = []
    scanned = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        facts = inspect_file(path, rel)
        if facts is None:
            continue
        scanned += 1
        if facts.get("error"):
            problems.append(f"{rel}: {facts['error']}")
            continue
        role = _role(rel)
        needed, marks = set(facts["crypto_needed"]), set(facts["marks"])
        if role is None:
            if needed or marks:
                what = [f"links {', '.join(sorted(needed))}"] if needed else []
                what += [f"embeds {m} ({facts['marks'][m]!r})" for m in sorted(marks)]
                problems.append(f"{rel}: {'; '.join(what)}: cryptography that is not the runtime's OpenSSL and its "
                                "FIPS provider")
            continue
        facts["role"] = role.what
        if role.needs - needed:
            problems.append(f"{rel}: does not link {', '.join(sorted(role.needs - needed))} ({role.what})")
        extra = needed - role.needs - role.may_need
        if extra:
            problems.append(f"{rel}: links {', '.join(sorted(extra))}, which its role does not allow ({role.what})")
        if role.marks - marks:
            problems.append(f"{rel}: lacks the mark of {', '.join(sorted(role.marks - marks))}: is it the file "
                            f"its name says? ({role.what})")
        foreign = marks - role.marks
        if foreign:
            found = ", ".join(f"{m} ({facts['marks'][m]!r})" for m in sorted(foreign))
            problems.append(f"{rel}: embeds {found} besides being {role.what}")
        files.append(facts)
    present = {f["path"] for f in files}
    for required in ("fips/fips.so", "lib/libcrypto.so.3"):
        if required not in present:
            problems.append(f"{required}: missing from the runtime at {root}")
    return {"root": str(root), "elf_files": scanned, "crypto_files": files, "problems": problems}
