"""The Go builder image of docker mode, made locally from pinned inputs (like a recipe).

No container registry is assumed: ``recipes/builders/go-builder.toml`` names a Debian
suite, mirror and package list (debootstrap), pinned versions of the packages whose bits
reach cgo/C outputs, extra .deb files by sha256, and the Go toolchain zip from the Go
module proxy by its go.sum hash and sha256. The image is tagged by the sha256 of these
inputs (``mke-go-builder:<digest>``) and built only when that tag is missing:

    debootstrap --variant=minbase  ->  check pinned versions  ->  deterministic tar
      ->  docker import (base)  ->  docker build FROM base: + Go, + extra debs  ->  tag

The same verified Go toolchain is unpacked on the host (``<cache>/toolchains/``) for the
host-side ``go mod download``. The image's ID goes into every docker action key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from build.action import canonical_json
from build.cache import Cache
from build.docker_engine import LABEL, DockerEngine
from build.download import Downloader
from build.errors import BuilderImageError, RecipeError
from build.gomod import module_zip_h1
from build.platform import Platform
from build.progress import log
from build.tomlcheck import TomlChecker, read_toml

BUILDER_SCHEMA = 1
IMAGE_REPO = "mke-go-builder"
DEFAULT_GOPROXY = "https://proxy.golang.org"
# mtime of every file in the imported rootfs tarball (debootstrap's own times vary per run).
ROOTFS_MTIME = 946684800  # 2000-01-01T00:00:00Z
ROOTFS_PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                "usr/share/locale", "usr/share/info", "var/log")
BUILDER_ENV = {
    "PATH": "/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "GOROOT": "/usr/local/go",
    "GOTOOLCHAIN": "local",
    "GOPROXY": "off",
    "GOSUMDB": "off",
    "GOFLAGS": "-mod=mod",
    "GOTELEMETRY": "off",
    "GOWORK": "off",
    "CGO_ENABLED": "0",
}
DOCKERFILE = """\
FROM {base}
COPY go /usr/local/go
COPY debs/ /tmp/mke-debs/
RUN set -e; for d in /tmp/mke-debs/*.deb; do [ -e "$d" ] && dpkg-deb -x "$d" /; done; rm -rf /tmp/mke-debs; \\
    /usr/local/go/bin/go version
ENV {env}
"""


# --------------------------------------------------------------------------- spec


@dataclasses.dataclass(frozen=True, kw_only=True)
class Deb:
    url: str
    sha256: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoZip:
    h1: str
    sha256: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuilderSpec:
    name: str
    description: str
    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    versions: tuple[tuple[str, str], ...]
    debs: tuple[Deb, ...]
    go_version: str
    go_zips: tuple[tuple[str, GoZip], ...]  # host arch -> pins
    path: Path

    def inputs(self) -> dict[str, Any]:
        """Everything that decides the image's contents (the tag is their digest)."""
        d = dataclasses.asdict(self)
        d.pop("path")
        d.pop("description")
        return {"schema": BUILDER_SCHEMA, "spec": d, "dockerfile": DOCKERFILE, "env": BUILDER_ENV,
                "prune": list(ROOTFS_PRUNE), "mtime": ROOTFS_MTIME}

    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(canonical_json(self.inputs())).hexdigest()

    @property
    def tag(self) -> str:
        return f"{IMAGE_REPO}:{self.digest()[:20]}"

    def go_zip(self, host_arch: str) -> GoZip:
        pins = dict(self.go_zips)
        if host_arch not in pins:
            raise RecipeError(f"{self.path}: go.zip.{host_arch}: no pinned Go toolchain for a {host_arch} host "
                              f"(pinned: {', '.join(pins) or 'none'})")
        return pins[host_arch]

    def go_module_version(self, host_arch: str) -> str:
        return f"v0.0.1-{self.go_version}.linux-{host_arch}"


def load_builder_spec(path: Path) -> BuilderSpec:
    data = read_toml(path, "builder spec")
    ctx = TomlChecker(path)
    ctx.keys("", data, {"schema", "name", "description", "rootfs", "deb", "go"}, {"schema", "name", "rootfs", "go"})
    if ctx.get("", data, "schema", int) != BUILDER_SCHEMA:
        raise ctx.fail("schema", f"unsupported builder schema; this toolchain reads schema {BUILDER_SCHEMA}")
    rootfs = ctx.get("", data, "rootfs", dict)
    ctx.keys("rootfs", rootfs, {"suite", "mirror", "variant", "packages", "versions"}, {"suite", "mirror", "packages"})
    mirror = ctx.get("rootfs", rootfs, "mirror", str)
    if not mirror.startswith(("http://", "https://")):
        raise ctx.fail("rootfs.mirror", f"must be an http(s) URL, got {mirror!r}")
    debs = []
    for i, d in enumerate(ctx.get("", data, "deb", list, [])):
        where = f"deb[{i}]"
        if not isinstance(d, dict):
            raise ctx.fail(where, "expected a table ([[deb]])")
        ctx.keys(where, d, {"url", "sha256"}, {"url", "sha256"})
        sha = ctx.get(where, d, "sha256", str)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ctx.fail(f"{where}.sha256", f"not a sha256 hex digest: {sha!r}")
        debs.append(Deb(url=ctx.get(where, d, "url", str), sha256=sha))
    go = ctx.get("", data, "go", dict)
    ctx.keys("go", go, {"version", "zip"}, {"version", "zip"})
    go_version = ctx.get("go", go, "version", str)
    if not go_version.startswith("go1."):
        raise ctx.fail("go.version", f"expected a Go release like go1.26.11, got {go_version!r}")
    zips = []
    for arch, z in sorted(ctx.get("go", go, "zip", dict).items()):
        where = f"go.zip.{arch}"
        if arch not in ("amd64", "arm64"):
            raise ctx.fail(where, "host arch must be amd64 or arm64")
        if not isinstance(z, dict):
            raise ctx.fail(where, "expected a table with h1 and sha256")
        ctx.keys(where, z, {"h1", "sha256"}, {"h1", "sha256"})
        h1 = ctx.get(where, z, "h1", str)
        if not h1.startswith("h1:"):
            raise ctx.fail(f"{where}.h1", f"expected a go.sum hash (h1:...), got {h1!r}")
        zips.append((arch, GoZip(h1=h1, sha256=ctx.get(where, z, "sha256", str))))
    return BuilderSpec(
        name=ctx.get("", data, "name", str),
        description=ctx.get("", data, "description", str, ""),
        suite=ctx.get("rootfs", rootfs, "suite", str),
        mirror=mirror.rstrip("/"),
        variant=ctx.get("rootfs", rootfs, "variant", str, "minbase"),
        packages=tuple(sorted(ctx.str_list("rootfs", rootfs, "packages"))),
        versions=ctx.str_table("rootfs", rootfs, "versions", ()),
        debs=tuple(debs),
        go_version=go_version,
        go_zips=tuple(zips),
        path=path,
    )


# --------------------------------------------------------------------------- Go toolchain


def goproxy_base() -> str:
    """The first http(s) entry of $GOPROXY, else the public proxy."""
    for entry in os.environ.get("GOPROXY", "").replace("|", ",").split(","):
        entry = entry.strip()
        if entry.startswith(("http://", "https://")):
            return entry.rstrip("/")
    return DEFAULT_GOPROXY


def fetch_go_zip(spec: BuilderSpec, cache: Cache, host_arch: str, mirror: str | None) -> Path:
    """Download golang.org/toolchain's zip for ``host_arch`` from the module proxy, verified by sha256 and h1."""
    pins = spec.go_zip(host_arch)
    version = spec.go_module_version(host_arch)
    url = f"{goproxy_base()}/golang.org/toolchain/@v/{version}.zip"
    path = Downloader(cache.root / "downloads", mirror=mirror).download(url, sha256=pins.sha256, component="go-builder")
    got = module_zip_h1(path)
    if got != pins.h1:
        path.unlink(missing_ok=True)
        raise BuilderImageError(f"{url}: go.sum hash {got} does not match the pin {pins.h1} in {spec.path}")
    return path


def unpack_go(zip_path: Path, dest: Path, prefix: str) -> None:
    """Unpack a golang.org/toolchain zip (its files under ``prefix/``) into ``dest``.

    Module zips carry no file modes; as the go command does when it switches
    toolchains, make bin/* and pkg/tool/*/* executable.
    """
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            if info.is_dir() or not info.filename.startswith(prefix + "/"):
                continue
            rel = info.filename[len(prefix) + 1:]
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise BuilderImageError(f"{zip_path}: unsafe member {info.filename}")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            parts = Path(rel).parts
            executable = parts[0] == "bin" or (len(parts) >= 3 and parts[:2] == ("pkg", "tool"))
            os.chmod(target, 0o755 if executable else 0o644)


def host_go(spec: BuilderSpec, cache: Cache, mirror: str | None = None) -> Path:
    """The builder's Go, unpacked on the host under ``<cache>/toolchains/``; returns .../bin/go."""
    host_arch = Platform.host().arch
    name = f"{spec.go_version}.linux-{host_arch}"
    root = cache.root / "toolchains" / name
    marker = root / ".mke-verified"
    pins = spec.go_zip(host_arch)
    if marker.is_file() and marker.read_text() == pins.h1:
        return root / "bin" / "go"
    with _file_lock(cache.root / "locks" / f"toolchain-{name}.lock"):
        if marker.is_file() and marker.read_text() == pins.h1:
            return root / "bin" / "go"
        zip_path = fetch_go_zip(spec, cache, host_arch, mirror)
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache.root / "tmp"))
        try:
            unpack_go(zip_path, tmp, f"golang.org/toolchain@{spec.go_module_version(host_arch)}")
            (tmp / ".mke-verified").write_text(pins.h1)
            if root.exists():
                shutil.rmtree(root)
            root.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    log("go-builder", f"host toolchain {spec.go_version} ready in {root}")
    return root / "bin" / "go"


# --------------------------------------------------------------------------- image


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuilderImage:
    tag: str
    image_id: str
    go_version: str
    input_digest: str

    def identity(self) -> dict[str, str]:
        """What the image contributes to an action key."""
        return {"image_id": self.image_id, "inputs": self.input_digest, "go": self.go_version}


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_builder(engine: DockerEngine, spec: BuilderSpec, cache: Cache, *, mirror: str | None = None,
                   on_line: Callable[[str], None] | None = None) -> BuilderImage:
    """The builder image for ``spec``: the local image tagged by its input digest, built if missing."""
    digest = spec.digest()
    tag = spec.tag
    say = on_line or (lambda line: log("go-builder", line))
    image_id = engine.image_id(tag)
    if image_id is None:
        with _file_lock(cache.root / "locks" / f"builder-{digest[:20]}.lock"):
            image_id = engine.image_id(tag)  # another build may have made it meanwhile
            if image_id is None:
                t0 = time.monotonic()
                image_id = _build(engine, spec, cache, mirror=mirror, say=say)
                say(f"built {tag} ({image_id[:19]}) in {time.monotonic() - t0:.0f}s")
    return BuilderImage(tag=tag, image_id=image_id, go_version=spec.go_version, input_digest=digest)


def _build(engine: DockerEngine, spec: BuilderSpec, cache: Cache, *, mirror: str | None, say: Callable[[str], None]) -> str:
    if os.geteuid() != 0:
        raise BuilderImageError(f"building the builder image {spec.tag} runs debootstrap, which needs root: "
                                "run the build as root once (later builds reuse the image)")
    if shutil.which("debootstrap") is None:
        raise BuilderImageError("debootstrap is not installed: `sudo apt-get install debootstrap` (or run scripts/bootstrap.sh)")
    host_arch = Platform.host().arch
    zip_path = fetch_go_zip(spec, cache, host_arch, mirror)
    work = Path(tempfile.mkdtemp(prefix="go-builder-", dir=cache.root / "tmp"))
    try:
        rootfs = work / "rootfs"
        packages = _debootstrap(spec, rootfs, cache.root / "debootstrap", say)
        _check_versions(spec, packages)
        rootfs_tar = work / "rootfs.tar"
        _tar_rootfs(rootfs, rootfs_tar)
        shutil.rmtree(rootfs)
        base_tag = f"{IMAGE_REPO}-base:{spec.digest()[:20]}"
        say(f"docker import {rootfs_tar.stat().st_size / 2**20:.0f} MiB rootfs as {base_tag}")
        engine.import_rootfs(rootfs_tar, base_tag, changes=[f"ENV PATH={BUILDER_ENV['PATH']}"])
        rootfs_tar.unlink()
        context = _build_context(spec, work, zip_path, host_arch, base_tag, cache, mirror)
        labels = {
            LABEL: "go-builder",
            "dev.mke.builder.inputs": spec.digest(),
            "dev.mke.builder.go": spec.go_version,
            "dev.mke.builder.packages": json.dumps(sorted(f"{k}={v}" for k, v in packages.items())),
        }
        def build_line(line: str) -> None:
            if line.startswith(("Step ", "go version", "Successfully")):
                say(line if len(line) <= 120 else line[:117] + "...")

        return engine.build_image(context, spec.tag, build_line, labels)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _debootstrap(spec: BuilderSpec, rootfs: Path, debcache: Path, say: Callable[[str], None]) -> dict[str, str]:
    debcache.mkdir(parents=True, exist_ok=True)
    args = ["debootstrap", f"--variant={spec.variant}", "--include=" + ",".join(spec.packages),
            f"--cache-dir={debcache.resolve()}", spec.suite, str(rootfs), spec.mirror]
    say(f"debootstrap {spec.suite} from {spec.mirror} ({len(spec.packages)} packages + dependencies)")
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-30:]
        if line.startswith(("E:", "W:")) or "Base system installed" in line:
            say(line.rstrip())
    if proc.wait() != 0:
        raise BuilderImageError("debootstrap failed: " + " | ".join(tail[-5:]))
    say(f"debootstrap done in {time.monotonic() - t0:.0f}s")
    out = subprocess.run(["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package}=${Version}\\n"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BuilderImageError(f"cannot list the builder's packages: {out.stderr.strip()}")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def _check_versions(spec: BuilderSpec, installed: dict[str, str]) -> None:
    for pkg, want in spec.versions:
        got = installed.get(pkg)
        if got != want:
            raise BuilderImageError(
                f"{spec.path}: rootfs.versions.{pkg}: the Debian archive now gives {got or 'nothing'}, the pin is {want}; "
                "check the change, then update the pin (it changes the builder image and every docker action key)"
            )


def _tar_rootfs(rootfs: Path, dest: Path) -> None:
    for rel in ROOTFS_PRUNE:
        d = rootfs / rel
        if d.is_dir():
            for child in d.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for rel in ("var/cache/ldconfig/aux-cache", "etc/machine-id"):
        (rootfs / rel).unlink(missing_ok=True)
    # GNU tar: sorted names, numeric owners, one mtime: the same tree gives the same bytes.
    subprocess.run(["tar", "--sort=name", "--numeric-owner", f"--mtime=@{ROOTFS_MTIME}", "--clamp-mtime",
                    "-C", str(rootfs), "-cf", str(dest), "."], check=True)


def _build_context(spec: BuilderSpec, work: Path, zip_path: Path, host_arch: str, base_tag: str,
                   cache: Cache, mirror: str | None) -> Path:
    """A tar build context: Dockerfile, go/ (the unpacked toolchain), debs/."""
    ctxdir = work / "context"
    (ctxdir / "debs").mkdir(parents=True)
    unpack_go(zip_path, ctxdir / "go", f"golang.org/toolchain@{spec.go_module_version(host_arch)}")
    downloader = Downloader(cache.root / "downloads", mirror=mirror)
    for deb in spec.debs:
        path = downloader.download(deb.url, sha256=deb.sha256, component="go-builder")
        shutil.copyfile(path, ctxdir / "debs" / deb.url.rsplit("/", 1)[-1])
    env = " ".join(f"{k}={v}" for k, v in BUILDER_ENV.items())
    (ctxdir / "Dockerfile").write_text(DOCKERFILE.format(base=base_tag, env=env))
    tar_path = work / "context.tar"
    with tarfile.open(tar_path, "w") as tar:
        for p in sorted(ctxdir.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(ctxdir)), recursive=False)
    return tar_path
