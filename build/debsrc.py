"""Debian source packages for ``[source] kind = "debian"`` recipes (host userland: iptables, ...).

A recipe names Debian source packages (``.dsc`` URL + version) and, where the archive here
does not serve a library's sources, Debian binary ``-dev`` packages that carry its static
library. Every URL is pinned by sha256 in recipes.lock (``"debian"`` section); ``nox -s
lock`` takes the digests from apt (``apt-get source/download --print-uris``), whose indexes
are verified against the Debian archive's signed InRelease.

On the host, before the container starts (everything verified before use):

- download the ``.dsc``, check it against the lock, read its ``Checksums-Sha256`` and
  download each file it lists (``.orig.tar.*``, ``.debian.tar.*``), each checked against
  both the ``.dsc`` and the lock;
- unpack the orig tarball (top directory stripped) and the debian tarball into
  ``<work>/in/src/<package>/`` with tarfile's ``data`` filter (no absolute paths, no
  ``..``, no device files, no links out of the tree); read ``debian/patches/series``;
- unpack each ``.deb``'s ``data.tar.*`` into ``<work>/in/sysroot/`` and point its
  pkg-config files at that directory.

In the container (the Go builder image: gcc, glibc's static libc, make, patch; read-only
inputs, ``--network=none``): apply the Debian patches, set every mtime to the build date
(generated autotools files are then never regenerated and outputs do not depend on
unpack times), ``configure --disable-shared --enable-static``, ``make``, ``make install``
into one prefix that the next package builds against, then copy and strip the outputs.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shlex
import subprocess
import tarfile
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from build.download import Downloader
from build.errors import DebianSourceError, LockfileError
from build.fsutil import extract_all
from build.recipes import DebianDeb, DebianPackage, DebianSource, Recipe, render

DEBIAN_MODE_SCHEMA = 2  # bump when the container script changes shape (enters action keys)
DEFAULT_EPOCH = 315532800  # 1980-01-01T00:00:00Z: source mtimes when SOURCE_DATE_EPOCH is unset
IN_MOUNT = "/in"
PREFIX = "/prefix"
BUILD_DIR = "/build"
OUT_DIR = "/out"
SUPPORTED_FORMATS = ("3.0 (quilt)", "3.0 (native)")
_CHECKSUM_LINE = re.compile(r"^\s*([0-9a-f]{64})\s+(\d+)\s+(\S+)\s*$")


# --------------------------------------------------------------------------- .dsc


def quote_name(name: str) -> str:
    """A pool file name as apt writes it in URLs (``+`` -> ``%2b``); the lock is keyed by those URLs."""
    return name.replace("+", "%2b")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DscFile:
    name: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dsc:
    source: str
    version: str
    format: str
    files: tuple[DscFile, ...]

    def file_url(self, dsc_url: str, f: DscFile) -> str:
        return dsc_url.rsplit("/", 1)[0] + "/" + quote_name(f.name)

    @property
    def orig(self) -> DscFile | None:
        return next((f for f in self.files if ".orig.tar." in f.name), None)

    @property
    def debian(self) -> DscFile | None:
        return next((f for f in self.files if ".debian.tar." in f.name), None)


def parse_dsc(text: str, *, where: str) -> Dsc:
    """The fields of a Debian source control file that a build needs (a PGP armor is ignored)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("-----BEGIN PGP SIGNATURE"):
            break
        if line.startswith(("-----BEGIN PGP SIGNED", "Hash:")) or not line.strip():
            continue
        if line[0] in " \t" and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    for required in ("Source", "Version", "Format", "Checksums-Sha256"):
        if required not in fields:
            raise DebianSourceError(f"{where}: not a Debian source control file (no {required} field)")
    if fields["Format"] not in SUPPORTED_FORMATS:
        raise DebianSourceError(f"{where}: source format {fields['Format']!r} is not supported "
                                f"(supported: {', '.join(SUPPORTED_FORMATS)})")
    files = []
    for line in fields["Checksums-Sha256"].splitlines():
        if not line.strip():
            continue
        m = _CHECKSUM_LINE.match(line)
        if not m or "/" in m.group(3):
            raise DebianSourceError(f"{where}: bad Checksums-Sha256 line {line.strip()!r}")
        files.append(DscFile(name=m.group(3), size=int(m.group(2)), sha256=m.group(1)))
    return Dsc(source=fields["Source"], version=fields["Version"], format=fields["Format"], files=tuple(files))


# --------------------------------------------------------------------------- pins


def deb_url(deb: DebianDeb, arch: str) -> str:
    return render(deb.url, arch=arch)


def pinned(lock_entries: dict[str, str], url: str, component: str) -> str:
    digest = lock_entries.get(url)
    if digest is None:
        raise LockfileError(f"{component}: recipes.lock pins no sha256 for {url}; "
                            f"run `nox -s lock -- --component {component}`")
    return digest


def pinned_urls(recipe: Recipe, arch: str, lock_entries: dict[str, str]) -> dict[str, str]:
    """Every URL the build of ``recipe`` downloads, with its pinned sha256 (for the action key)."""
    src = recipe.source
    assert isinstance(src, DebianSource)
    urls = [p.dsc for p in src.packages] + [deb_url(d, arch) for d in src.debs]
    out = {u: pinned(lock_entries, u, recipe.name) for u in urls}
    for p in src.packages:  # the files each .dsc lists are pinned too
        prefix = p.dsc.rsplit("/", 1)[0] + "/"
        listed = {u: d for u, d in lock_entries.items() if u.startswith(prefix) and u != p.dsc
                  and urllib.parse.unquote(u.rsplit("/", 1)[-1]).startswith(f"{p.name}_")}
        if not listed:
            raise LockfileError(f"{recipe.name}: recipes.lock pins no files of {p.name} {p.version} (only its .dsc); "
                                f"run `nox -s lock -- --component {recipe.name}`")
        out.update(listed)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- fetch + unpack


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedPackage:
    package: DebianPackage
    dsc: Dsc
    patches: tuple[tuple[str, tuple[str, ...]], ...]  # (patch path under debian/patches, patch options)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedInputs:
    """``<work>/in``: src/<package>/ trees and sysroot/, ready to mount read-only."""

    dir: Path
    packages: tuple[PreparedPackage, ...]


def _safe_extract(archive: Path | io.BufferedIOBase, dest: Path, *, strip_top: bool, where: str) -> None:
    """Extract a tarball with tarfile's ``data`` filter, optionally dropping its single top directory."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) if isinstance(archive, Path) else tarfile.open(fileobj=archive) as tf:
            members = tf.getmembers()
            if strip_top:
                tops = {m.name.split("/", 1)[0] for m in members if m.name not in (".", "./")}
                if len(tops) != 1:
                    raise DebianSourceError(f"{where}: expected one top directory, found {len(tops)}")
                top = tops.pop()
                kept = []
                for m in members:
                    if m.name == top:
                        continue
                    m.name = m.name.split("/", 1)[1]
                    if m.linkname and m.islnk():
                        m.linkname = m.linkname.split("/", 1)[1] if "/" in m.linkname else m.linkname
                    kept.append(m)
                members = kept
            extract_all(tf, dest, members=members)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DebianSourceError(f"{where}: cannot unpack: {e}") from e


def read_series(tree: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """debian/patches/series as (patch, options); quilt's default strip level is -p1."""
    series = tree / "debian" / "patches" / "series"
    if not series.is_file():
        return ()
    out = []
    for line in series.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, *opts = line.split()
        if ".." in Path(name).parts or name.startswith("/"):
            raise DebianSourceError(f"{series}: unsafe patch name {name!r}")
        if not (tree / "debian" / "patches" / name).is_file():
            raise DebianSourceError(f"{series}: lists {name}, which the debian tarball does not contain")
        out.append((name, tuple(opts) or ("-p1",)))
    return tuple(out)


def _ar_members(path: Path) -> dict[str, bytes]:
    """The members of a .deb (an ar archive)."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise DebianSourceError(f"{path}: not a Debian binary package (no ar header)")
    pos, out = 8, {}
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
    return out


def unpack_deb(path: Path, sysroot: Path) -> None:
    """Unpack a .deb's data.tar.* into ``sysroot`` and point its pkg-config files there."""
    members = _ar_members(path)
    data = next((v for k, v in members.items() if k.startswith("data.tar")), None)
    if data is None:
        raise DebianSourceError(f"{path}: no data.tar member")
    name = next(k for k in members if k.startswith("data.tar"))
    if name.endswith(".zst"):
        raise DebianSourceError(f"{path}: zstd-compressed .deb members are not supported (Debian uses xz)")
    _safe_extract(io.BytesIO(data), sysroot, strip_top=False, where=str(path))  # type: ignore[arg-type]
    mount = f"{IN_MOUNT}/sysroot"
    for pc in sysroot.rglob("*.pc"):
        text = pc.read_text()
        pc.write_text(re.sub(r"^prefix=/usr\s*$", f"prefix={mount}/usr", text, flags=re.MULTILINE))


def prepare_inputs(recipe: Recipe, arch: str, lock_entries: dict[str, str], downloader: Downloader,
                   dest: Path) -> PreparedInputs:
    """Download (verified) and unpack every source and binary package of ``recipe`` into ``dest``."""
    src = recipe.source
    assert isinstance(src, DebianSource)
    prepared = []
    for p in src.packages:
        dsc_path = downloader.download(p.dsc, sha256=pinned(lock_entries, p.dsc, recipe.name), component=recipe.name)
        dsc = parse_dsc(dsc_path.read_text(errors="replace"), where=p.dsc)
        if dsc.source != p.name or dsc.version != p.version:
            raise DebianSourceError(f"{recipe.path}: {p.dsc} is {dsc.source} {dsc.version}, the recipe says {p.name} {p.version}")
        tree = dest / "src" / p.name
        if dsc.orig is None and dsc.format != "3.0 (native)":
            raise DebianSourceError(f"{p.dsc}: lists no .orig.tar.* file")
        files = {}
        for f in dsc.files:
            url = dsc.file_url(p.dsc, f)
            want = pinned(lock_entries, url, recipe.name)
            if want != f.sha256:
                raise DebianSourceError(f"{url}: recipes.lock pins sha256 {want}, the verified .dsc says {f.sha256}")
            files[f.name] = downloader.download(url, sha256=want, component=recipe.name)
        main = dsc.orig or next(f for f in dsc.files if ".tar." in f.name)
        _safe_extract(files[main.name], tree, strip_top=True, where=main.name)
        if dsc.debian is not None:
            _safe_extract(files[dsc.debian.name], tree, strip_top=False, where=dsc.debian.name)
        prepared.append(PreparedPackage(package=p, dsc=dsc, patches=read_series(tree)))
    for d in src.debs:
        url = deb_url(d, arch)
        path = downloader.download(url, sha256=pinned(lock_entries, url, recipe.name), component=recipe.name)
        unpack_deb(path, dest / "sysroot")
    (dest / "sysroot").mkdir(parents=True, exist_ok=True)
    return PreparedInputs(dir=dest, packages=tuple(prepared))


# --------------------------------------------------------------------------- container script


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebianBuildEnv:
    """Everything about one container build besides the inputs and the builder image (enters the action key)."""

    triple: str  # x86_64-linux-gnu
    cflags: str
    ldflags: str
    extra_env: tuple[tuple[str, str], ...]
    epoch: int

    def container_env(self) -> dict[str, str]:
        pkgconfig = [f"{PREFIX}/lib/pkgconfig", f"{IN_MOUNT}/sysroot/usr/lib/{self.triple}/pkgconfig",
                     f"{IN_MOUNT}/sysroot/usr/lib/pkgconfig", f"{IN_MOUNT}/sysroot/usr/share/pkgconfig"]
        env = {
            # One static link for every program. `--static` is gcc's spelling that libtool passes
            # through: libtool takes `-static` as its own flag (prefer static .la) and drops it.
            "CC": f"{self.triple}-gcc --static",
            "CFLAGS": self.cflags,
            "LDFLAGS": self.ldflags,
            # Only the prefix and the sysroot: never the builder's own .pc files.
            "PKG_CONFIG_LIBDIR": ":".join(pkgconfig),
            "PKG_CONFIG_PATH": "",
            "SOURCE_DATE_EPOCH": str(self.epoch),
            "LC_ALL": "C",
            "TZ": "UTC",
            "HOME": "/tmp",
            "MAKEFLAGS": f"-j{max(1, os.cpu_count() or 1)}",
        }
        env.update(dict(self.extra_env))
        return env

    def as_key(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return d


def build_env(src: DebianSource, *, triple: str, epoch: int) -> DebianBuildEnv:
    return DebianBuildEnv(triple=triple, cflags=" ".join(src.cflags), ldflags=" ".join(src.ldflags),
                          extra_env=src.env, epoch=epoch)


def container_script(recipe: Recipe, env: DebianBuildEnv, packages: tuple[PreparedPackage, ...] | None = None) -> str:
    """The shell script the container runs (every word quoted; ``packages`` supplies the patch lists)."""
    src = recipe.source
    assert isinstance(src, DebianSource)
    patches = {pp.package.name: pp.patches for pp in (packages or ())}
    lines = ["set -eu", f"mkdir -p {OUT_DIR} {BUILD_DIR} {PREFIX}"]
    for p in src.packages:
        tree = f"{BUILD_DIR}/{p.name}"
        q = shlex.quote
        lines.append(f"echo '=== {p.name} {p.version}'")
        lines.append(f"cp -a {q(f'{IN_MOUNT}/src/{p.name}')} {q(tree)}")
        lines.append(f"cd {q(tree)}")
        for patch, opts in (patches.get(p.name, ()) if p.debian_patches else ()):
            lines.append(shlex.join(["patch", "-s", "-f", "--no-backup-if-mismatch", *opts,
                                     "-i", f"debian/patches/{patch}"]))
        lines.append('find . -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +')
        if p.build == "kconfig":  # make defconfig, each setting over it, then make oldconfig keeps the rest
            lines.append(shlex.join(["make", "defconfig"]))
            for setting in p.kconfig:
                name = setting.split("=", 1)[0]
                lines.append(shlex.join(["sed", "-i", "-e", f"/^{name}=/d", "-e", f"/^# {name} is not set/d", ".config"]))
                lines.append(f"printf '%s\\n' {shlex.quote(setting)} >> .config")
            lines.append("yes '' | make oldconfig >/dev/null")
            for setting in p.kconfig:  # a setting oldconfig dropped (unknown, or its dependency is off) is an error
                lines.append(f"grep -qxF {shlex.quote(setting if not setting.endswith('=n') else '# ' + setting[:-2] + ' is not set')} "
                             f".config || {{ echo 'kconfig: {setting} did not take' >&2; exit 1; }}")
        else:
            lines.append(shlex.join(["./configure", f"--prefix={PREFIX}", f"--build={env.triple}", f"--host={env.triple}",
                                     "--disable-shared", "--enable-static", "--disable-dependency-tracking",
                                     *p.configure]))
        lines.append(shlex.join(["make", "V=1", *p.make]))
        if p.install:
            lines.append(shlex.join(["make", *p.install]))
    for binary, path in src.outputs:
        lines.append(shlex.join(["cp", "-L", f"{PREFIX}/{path}", f"{OUT_DIR}/{binary}"]))
        lines.append(shlex.join([f"{env.triple}-strip", "--strip-all", f"{OUT_DIR}/{binary}"]))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- lock (apt)


APT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def _apt(root: Path, args: list[str], what: str, tool: str = "apt-get", arch: str = "") -> str:
    opts = [f"-oDir::Etc={root}/etc", f"-oDir::State={root}/state", f"-oDir::Cache={root}/cache",
            "-oDir::State::status=/dev/null", "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root", "-qq"]
    if arch:  # every tool (apt-cache too) must see the same native arch, or it rebuilds the cache for another
        opts += [f"-oAPT::Architecture={arch}", f"-oAPT::Architectures::={arch}"]
    try:
        proc = subprocess.run([tool, *opts, *args], capture_output=True, text=True, check=False, cwd=root)
    except FileNotFoundError:
        raise LockfileError("apt-get is not installed: pinning Debian packages needs apt (a Debian or Ubuntu host)") from None
    if proc.returncode != 0:
        raise LockfileError(f"{what}: apt-get {args[0]} failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def _print_uris(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].startswith("'") and parts[3].startswith("SHA256:"):
            out[parts[0].strip("'")] = parts[3].split(":", 1)[1].lower()
    return out


def resolve_pins(recipe: Recipe, arches: list[str], mirror: str = "https://deb.debian.org/debian") -> dict[str, str]:
    """For ``nox -s lock``: URL -> sha256 of every file ``recipe`` downloads, as apt reports them.

    apt verifies its indexes against the archive's signed InRelease (the host's Debian
    archive keyring), so these digests are the archive's word, not the download's.
    """
    src = recipe.source
    assert isinstance(src, DebianSource)
    if not APT_KEYRING.is_file():
        raise LockfileError(f"{APT_KEYRING} is missing: install debian-archive-keyring to pin Debian packages")
    suites = sorted({p.suite for p in src.packages} | {d.suite for d in src.debs})
    pins: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix=f"apt-{recipe.name}-") as d:
        root = Path(d)
        for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "state/lists/partial",
                    "cache/archives/partial"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        lines = []
        for suite in suites:
            lines.append(f"deb-src [signed-by={APT_KEYRING}] {mirror} {suite} main")
            if src.debs:
                lines.append(f"deb [arch={','.join(arches)} signed-by={APT_KEYRING}] {mirror} {suite} main")
        (root / "etc" / "sources.list").write_text("\n".join(lines) + "\n")
        (root / "etc" / "apt.conf.d" / "arch").write_text(
            f'APT::Architecture "{arches[0]}";\nAPT::Architectures {{ {" ".join(f"{a!r}".replace(chr(39), chr(34)) + ";" for a in arches)} }};\n')
        _apt(root, ["update"], f"{recipe.name}: apt-get update ({', '.join(suites)})")
        for p in src.packages:
            got = _print_uris(_apt(root, ["source", "--print-uris", f"{p.name}={p.version}"], f"{recipe.name}: {p.name}"))
            if p.dsc not in got:
                raise LockfileError(f"{recipe.path}: apt has {p.name} {p.version} at {sorted(got) or 'nowhere'}, "
                                    f"not at the recipe's dsc URL {p.dsc}")
            pins.update({u: h for u, h in got.items() if not u.endswith(".asc")})
        for deb in src.debs:
            for arch in arches:
                want = deb_url(deb, arch)
                got = _print_uris(_apt(root, ["download", "--print-uris", f"{deb.name}:{arch}={deb.version}"],
                                       f"{recipe.name}: {deb.name}"))
                if want not in got:
                    raise LockfileError(f"{recipe.path}: apt has {deb.name} {deb.version} ({arch}) at "
                                        f"{sorted(got) or 'nowhere'}, not at the recipe's URL {want}")
                pins[want] = got[want]
    return dict(sorted(pins.items()))



def install_uris(text: str) -> dict[str, str]:
    """``name=version`` -> URL from ``apt-get install --print-uris`` (``'URL' file size MD5Sum:...`` lines)."""
    urls = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("'") and parts[1].endswith(".deb"):
            name, version, _ = urllib.parse.unquote(parts[1]).split("_")
            urls[f"{name}={version}"] = parts[0].strip("'")
    return urls


def packages_sha256(text: str) -> dict[str, str]:
    """``name=version`` -> SHA256 from ``apt-cache show`` paragraphs (the Packages index apt verified)."""
    sums = {}
    for para in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and not line.startswith(" "))
        if "Package" in fields and "SHA256" in fields and "Version" in fields:
            sums[f"{fields['Package']}={fields['Version']}"] = fields["SHA256"].strip().lower()
    return sums


def resolve_closures(sets: dict[str, tuple[str, tuple[str, ...]]], arches: list[str], *,
                     mirror: str = "https://deb.debian.org/debian") -> dict[str, dict[str, str]]:
    """For ``nox -s lock``: per key, URL -> sha256 of its packages and everything they depend on, per arch.

    ``sets`` maps a key to (suite, packages). apt resolves the dependencies as if nothing were
    installed (``--no-install-recommends``, an empty dpkg status), so each set is complete for an
    empty root; the digests are those of apt's indexes, which it checked against the suite's
    signed InRelease. One private apt state per suite and arch serves every set.
    """
    if not APT_KEYRING.is_file():
        raise LockfileError(f"{APT_KEYRING} is missing: install debian-archive-keyring to pin Debian packages")
    out: dict[str, dict[str, str]] = {key: {} for key in sets}
    for suite in sorted({suite for suite, _ in sets.values()}):
        for arch in arches:
            with tempfile.TemporaryDirectory(prefix=f"apt-{suite}-{arch}-") as d:
                root = Path(d)
                for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "state/lists/partial",
                            "cache/archives/partial"):
                    (root / sub).mkdir(parents=True, exist_ok=True)
                (root / "etc" / "sources.list").write_text(
                    f"deb [arch={arch} signed-by={APT_KEYRING}] {mirror} {suite} main\n")
                (root / "etc" / "apt.conf.d" / "arch").write_text(
                    f'APT::Architecture "{arch}";\nAPT::Architectures {{ "{arch}"; }};\n')
                _apt(root, ["update"], f"apt-get update ({suite}, {arch})", arch=arch)
                for key, (s_suite, packages) in sets.items():
                    if s_suite != suite:
                        continue
                    text = _apt(root, ["install", "--print-uris", "-y", "--no-install-recommends", *packages],
                                f"{key}: {' '.join(packages)} ({arch})", arch=arch)
                    urls = install_uris(text)
                    if not urls:
                        raise LockfileError(f"{key}: apt resolved nothing for {' '.join(packages)} ({suite}, {arch})")
                    # install --print-uris gives MD5 only: the SHA256 comes from the (signed) Packages index
                    sums = packages_sha256(_apt(root, ["show", "--no-all-versions", *sorted(urls)],
                                                f"{key}: apt-cache show", tool="apt-cache", arch=arch))
                    for nv, url in urls.items():
                        if nv not in sums:
                            raise LockfileError(f"{key}: apt-cache show has no SHA256 for {nv} ({suite}, {arch})")
                        out[key][url] = sums[nv]
    return {key: dict(sorted(pins.items())) for key, pins in out.items()}
