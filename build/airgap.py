"""Air-gap image bundles: the images a cluster pulls, built from this build's own binaries.

``recipes/images/<name>.toml`` describes one image (reference, entrypoint, user, which
built binary goes where, optional Debian packages); ``build_airgap`` turns the specs
into OCI images with ``mke/images/oci.py`` (Debian packages: ``build/deblayers.py``) and writes
``dist/mke-airgap-images-<os>-<arch>.tar`` (one archive for ``ctr images import`` and
``docker load``) plus ``.json`` beside it with every reference and digest.

Each image is one cached action: its key covers the spec, the digests of the binaries
and packages it packs, and the OCI writer's schema; its outputs (manifest, config,
layers) live in the CAS, so a no-op build rewrites nothing. The format is documented in
docs/airgap.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from build.action import Action
from build.cache import ActionResult, OutputFile
from build.deblayers import deb_entries
from build.errors import BuildError, ImageError, LockfileError, RecipeError
from build.fsutil import sha256_file, write_atomic
from build.modes.base import BuildContext
from build.progress import log
from build.recipes import DEB_NAME_RE, NAME_RE, render
from build.tomlcheck import TomlChecker, read_toml
from mke import errors as mke_errors
from mke.images import oci

SPEC_SCHEMA = 1
IMAGE_ACTION_SCHEMA = 2  # bump when mke/images/oci.py changes the bytes it writes
DEFAULT_DEB_EXCLUDE = ("/usr/share",)


# --------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileSpec:
    binary: str
    path: str
    mode: int = 0o755
    capabilities: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebSpec:
    url: str  # may use {arch}
    sha256: tuple[tuple[str, str], ...]  # (arch, digest)
    exclude: tuple[str, ...] = ()

    def digest(self, arch: str) -> str | None:
        return dict(self.sha256).get(arch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SymlinkSpec:
    path: str
    target: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebianSpec:
    """``[debian]``: packages from a Debian suite, with every dependency; the set is pinned in the lock."""

    suite: str
    packages: tuple[str, ...]
    exclude: tuple[str, ...] = ()  # path prefixes left out (besides /usr/share)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceFileSpec:
    """``[[source_file]]``: a file from a recipe's Go module (its zip, verified by the pinned go.sum hash)."""

    component: str
    source: str  # path inside the module
    path: str
    mode: int = 0o644


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextSpec:
    path: str
    content: str
    mode: int = 0o644


@dataclasses.dataclass(frozen=True, kw_only=True)
class DirectorySpec:
    path: str
    mode: int = 0o755


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinksSpec:
    """``[[links]]``: one symlink ``dir/<name>`` -> ``target`` per name (a multi-call binary's applets)."""

    target: str
    dir: str
    names: tuple[str, ...]


# Fields added for the conformance images (recipes/conformance/images/); they enter an image's
# action key only when set, so the keys of the system images stayed what they were.
_OPTIONAL_EMPTY = {"labels": (), "workdir": "/", "debian": None, "source_files": (), "texts": (),
                   "directories": (), "links": ()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageSpec:
    name: str
    ref: str  # template with {version}
    component: str  # the recipe whose version fills {version} ("" when ref names a fixed tag)
    base: bool
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str
    env: tuple[str, ...]
    exposed_ports: tuple[str, ...]
    files: tuple[FileSpec, ...]
    debs: tuple[DebSpec, ...]
    symlinks: tuple[SymlinkSpec, ...]
    path: Path
    labels: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    debian: DebianSpec | None = None
    source_files: tuple[SourceFileSpec, ...] = ()
    texts: tuple[TextSpec, ...] = ()
    directories: tuple[DirectorySpec, ...] = ()
    links: tuple[LinksSpec, ...] = ()

    @property
    def lock_key(self) -> str:
        """Where recipes.lock pins this image's ``[debian]`` packages (section ``debian``)."""
        return f"image:{self.name}"

    def reference(self, version: str) -> str:
        return render(self.ref, version=version)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("path")
        for k, empty in _OPTIONAL_EMPTY.items():
            if d[k] == empty or d[k] == list(empty or ()):
                d.pop(k)
        return d

    def config(self) -> oci.ImageConfig:
        env = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *self.env)
        return oci.ImageConfig(entrypoint=self.entrypoint, cmd=self.cmd, env=env, user=self.user,
                               exposed_ports=self.exposed_ports, labels=self.labels, workdir=self.workdir)


def parse_image_spec(path: Path, data: dict) -> ImageSpec:
    ctx = TomlChecker(path)
    top = {"schema", "name", "ref", "component", "base", "entrypoint", "cmd", "user", "env", "exposed_ports",
           "description", "file", "deb", "symlink", "labels", "workdir", "debian", "source_file", "text",
           "directory", "links"}
    schema = ctx.get("", data, "schema", int)
    if schema != SPEC_SCHEMA:
        raise ctx.fail("schema", f"unsupported image spec schema {schema}; this toolchain reads schema {SPEC_SCHEMA}")
    ctx.keys("", data, top, {"schema", "name", "ref"})
    name = ctx.get("", data, "name", str)
    if not NAME_RE.match(name):
        raise ctx.fail("name", f"{name!r} is not a valid image name (lowercase letters, digits, '-')")
    if path.suffix == ".toml" and path.stem != name:
        raise ctx.fail("name", f"{name!r} does not match the file name; rename the file to {name}.toml")
    ref = ctx.template("ref", ctx.get("", data, "ref", str), frozenset({"version"}))
    try:
        oci.split_ref(ref.replace("{version}", "0"))
    except mke_errors.ImageError as e:
        raise ctx.fail("ref", str(e).split(": ", 1)[-1]) from None
    component = ctx.get("", data, "component", str, "")
    if not component and "{version}" in ref:
        raise ctx.fail("component", "required when ref uses {version} (the recipe whose version fills it)")
    files = []
    for i, t in enumerate(ctx.get("", data, "file", list, [])):
        w = f"file[{i}]"
        if not isinstance(t, dict):
            raise ctx.fail(w, "expected a table ([[file]])")
        ctx.keys(w, t, {"binary", "path", "mode", "capabilities"}, {"binary", "path"})
        p = ctx.get(w, t, "path", str)
        if not p.startswith("/"):
            raise ctx.fail(f"{w}.path", f"must be absolute, got {p!r}")
        caps = ctx.str_list(w, t, "capabilities", ())
        for c in caps:
            if c not in oci.CAPABILITIES:
                raise ctx.fail(f"{w}.capabilities", f"unknown capability {c!r}; one of {', '.join(sorted(oci.CAPABILITIES))}")
        files.append(FileSpec(binary=ctx.get(w, t, "binary", str), path=p,
                              mode=ctx.get(w, t, "mode", int, 0o755), capabilities=caps))
    debs = []
    for i, t in enumerate(ctx.get("", data, "deb", list, [])):
        w = f"deb[{i}]"
        if not isinstance(t, dict):
            raise ctx.fail(w, "expected a table ([[deb]])")
        ctx.keys(w, t, {"url", "sha256", "exclude"}, {"url", "sha256"})
        url = ctx.template(f"{w}.url", ctx.get(w, t, "url", str), frozenset({"arch"}))
        if not url.startswith(("https://", "http://")) or not url.endswith(".deb"):
            raise ctx.fail(f"{w}.url", f"expected an http(s) URL of a .deb, got {url!r}")
        sums = ctx.str_table(w, t, "sha256")
        for arch, digest in sums:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ctx.fail(f"{w}.sha256.{arch}", "expected 64 lowercase hex digits")
        debs.append(DebSpec(url=url, sha256=sums, exclude=ctx.str_list(w, t, "exclude", ())))
    links = []
    for i, t in enumerate(ctx.get("", data, "symlink", list, [])):
        w = f"symlink[{i}]"
        if not isinstance(t, dict):
            raise ctx.fail(w, "expected a table ([[symlink]])")
        ctx.keys(w, t, {"path", "target"}, {"path", "target"})
        links.append(SymlinkSpec(path=ctx.get(w, t, "path", str), target=ctx.get(w, t, "target", str)))
    extra = _parse_extra(ctx, data)
    if not (files or debs or extra["debian"] or extra["source_files"] or extra["texts"]):
        raise ctx.fail("file", "list at least one [[file]] (or [debian], [[deb]], [[source_file]], [[text]])")
    return ImageSpec(
        **extra,
        name=name, ref=ref, component=component,
        base=ctx.get("", data, "base", bool, True),
        entrypoint=ctx.str_list("", data, "entrypoint", ()), cmd=ctx.str_list("", data, "cmd", ()),
        user=ctx.get("", data, "user", str, "") if data.get("user") != "" else "",
        env=ctx.str_list("", data, "env", ()), exposed_ports=ctx.str_list("", data, "exposed_ports", ()),
        files=tuple(files), debs=tuple(debs), symlinks=tuple(links), path=path,
    )


def _abs_path(ctx: TomlChecker, where: str, value: str) -> str:
    if not value.startswith("/") or any(p in (".", "..") for p in value.split("/")):
        raise ctx.fail(where, f"must be an absolute path without '.' or '..', got {value!r}")
    return value


def _mode(ctx: TomlChecker, where: str, t: dict, default: int) -> int:
    mode = ctx.get(where, t, "mode", int, default)
    if not 0 <= mode <= 0o7777:
        raise ctx.fail(f"{where}.mode", f"expected a file mode from 0o0 to 0o7777, got {mode:#o}")
    return mode


def _tables(ctx: TomlChecker, data: dict, key: str) -> list[tuple[str, dict]]:
    out = []
    for i, t in enumerate(ctx.get("", data, key, list, [])):
        w = f"{key}[{i}]"
        if not isinstance(t, dict):
            raise ctx.fail(w, f"expected a table ([[{key}]])")
        out.append((w, t))
    return out


def _parse_extra(ctx: TomlChecker, data: dict) -> dict[str, Any]:
    """The conformance images' fields: labels, workdir, [debian], [[source_file]], [[text]], [[directory]], [[links]]."""
    debian = None
    if "debian" in data:
        t = data["debian"]
        if not isinstance(t, dict):
            raise ctx.fail("debian", "expected a table ([debian])")
        ctx.keys("debian", t, {"suite", "packages", "exclude"}, {"suite", "packages"})
        suite = ctx.get("debian", t, "suite", str)
        if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
            raise ctx.fail("debian.suite", f"{suite!r} is not a Debian suite name (bookworm, trixie, ...)")
        packages = ctx.str_list("debian", t, "packages")
        if not packages:
            raise ctx.fail("debian.packages", "list at least one package")
        for i, p in enumerate(packages):
            if not DEB_NAME_RE.match(p):
                raise ctx.fail(f"debian.packages[{i}]", f"{p!r} is not a Debian package name")
        excl = ctx.str_list("debian", t, "exclude", ())
        for i, e in enumerate(excl):
            _abs_path(ctx, f"debian.exclude[{i}]", e)
        debian = DebianSpec(suite=suite, packages=packages, exclude=excl)
    source_files = []
    for w, t in _tables(ctx, data, "source_file"):
        ctx.keys(w, t, {"component", "from", "path", "mode"}, {"component", "from", "path"})
        src = ctx.get(w, t, "from", str)
        if src.startswith("/") or any(p in ("", ".", "..") for p in src.split("/")):
            raise ctx.fail(f"{w}.from", f"must be a relative path inside the module, got {src!r}")
        source_files.append(SourceFileSpec(component=ctx.get(w, t, "component", str), source=src,
                                           path=_abs_path(ctx, f"{w}.path", ctx.get(w, t, "path", str)),
                                           mode=_mode(ctx, w, t, 0o644)))
    texts = []
    for w, t in _tables(ctx, data, "text"):
        ctx.keys(w, t, {"path", "content", "mode"}, {"path", "content"})
        texts.append(TextSpec(path=_abs_path(ctx, f"{w}.path", ctx.get(w, t, "path", str)),
                              content=ctx.get(w, t, "content", str), mode=_mode(ctx, w, t, 0o644)))
    dirs = []
    for w, t in _tables(ctx, data, "directory"):
        ctx.keys(w, t, {"path", "mode"}, {"path"})
        dirs.append(DirectorySpec(path=_abs_path(ctx, f"{w}.path", ctx.get(w, t, "path", str)), mode=_mode(ctx, w, t, 0o755)))
    links = []
    for w, t in _tables(ctx, data, "links"):
        ctx.keys(w, t, {"target", "dir", "names"}, {"target", "dir", "names"})
        names = ctx.str_list(w, t, "names")
        for i, n in enumerate(names):
            if not n or "/" in n or n in (".", ".."):
                raise ctx.fail(f"{w}.names[{i}]", f"{n!r} is not a file name")
        if len(set(names)) != len(names):
            raise ctx.fail(f"{w}.names", "a name is listed twice")
        links.append(LinksSpec(target=ctx.get(w, t, "target", str), dir=_abs_path(ctx, f"{w}.dir", ctx.get(w, t, "dir", str)),
                               names=names))
    workdir = _abs_path(ctx, "workdir", ctx.get("", data, "workdir", str, "/"))
    return {"labels": ctx.str_table("", data, "labels", ()), "workdir": workdir, "debian": debian,
            "source_files": tuple(source_files), "texts": tuple(texts), "directories": tuple(dirs), "links": tuple(links)}


def load_image_specs(directory: Path) -> dict[str, ImageSpec]:
    if not directory.is_dir():
        raise RecipeError(f"{directory}: image specs directory not found")
    specs: dict[str, ImageSpec] = {}
    for path in sorted(directory.glob("*.toml")):
        spec = parse_image_spec(path, read_toml(path, "image spec"))
        specs[spec.name] = spec
    return specs


# --------------------------------------------------------------------------- building


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuiltBinary:
    name: str
    component: str
    version: str
    sha256: str
    path: Path


def binaries_from_results(ctx: BuildContext, results: list[Any]) -> dict[str, BuiltBinary]:
    """name -> the built binary in the CAS, from the pipeline's ComponentResults."""
    out = {}
    for res in results:
        if res.result is None:
            continue
        for o in res.result.outputs:
            out[o.name] = BuiltBinary(name=o.name, component=res.recipe.name, version=res.recipe.version,
                                      sha256=o.sha256, path=ctx.cache.cas.path(o.sha256))
    return out


def _deb_url(deb: DebSpec, arch: str) -> str:
    return render(deb.url, arch=arch)


def debian_urls(ctx: BuildContext, spec: ImageSpec) -> list[tuple[str, str]]:
    """(URL, sha256) of the ``[debian]`` packages pinned for this arch (``_<arch>.deb`` and ``_all.deb``)."""
    if spec.debian is None:
        return []
    arch = ctx.platform.arch
    pins = ctx.lock.debian_pins(spec.lock_key)
    got = sorted((u, d) for u, d in pins.items() if u.endswith((f"_{arch}.deb", "_all.deb")))
    if not any(u.endswith(f"_{arch}.deb") for u, _ in got):
        raise LockfileError(f"{spec.path}: debian: {ctx.lock.path} pins no {arch} packages for {spec.lock_key}; "
                            f"run `python -m build.cli lock --recipes-dir {spec.path.parent.parent} --image {spec.name}`")
    return got


def module_file_pin(ctx: BuildContext, spec: ImageSpec, sf: SourceFileSpec, recipes: dict[str, Any]) -> list[str]:
    """[module, version, pinned zip h1]: what a ``[[source_file]]`` comes from (its key; verified when read)."""
    from build.gomod import pinned_sums

    recipe = recipes.get(sf.component)
    src = getattr(recipe, "source", None)
    if src is None or not hasattr(src, "module"):
        raise BuildError(f"{spec.path}: source_file: component {sf.component!r} is no Go recipe of this build")
    h1, _ = pinned_sums(ctx.lock.gosum(sf.component), src.module, src.version)
    if h1 is None:
        raise LockfileError(f"{spec.path}: source_file: {ctx.lock.path} has no go.sum line for {src.module}@{src.version}")
    return [src.module, src.version, h1]


def image_action(ctx: BuildContext, spec: ImageSpec, version: str, binaries: dict[str, BuiltBinary],
                 recipes: dict[str, Any] | None = None) -> Action:
    arch = ctx.platform.arch
    extra: dict[str, Any] = {}
    if spec.debian is not None:
        extra["debian_pins"] = [list(p) for p in debian_urls(ctx, spec)]
    if spec.source_files:
        extra["source_files"] = [module_file_pin(ctx, spec, sf, recipes or {}) for sf in spec.source_files]
    debs = []
    for i, d in enumerate(spec.debs):
        digest = d.digest(arch)
        if digest is None:
            raise RecipeError(f"{spec.path}: deb[{i}].sha256.{arch}: not pinned for {arch}; add the package's sha256 "
                              f"(from Debian's {arch} Packages index) to build this image for {ctx.platform}")
        debs.append([_deb_url(d, arch), digest, list(d.exclude)])
    return Action(
        mode="oci-image",
        component=spec.name,
        platform=str(ctx.platform),
        inputs={
            "schema": IMAGE_ACTION_SCHEMA,
            "spec": spec.as_dict(),
            "ref": spec.reference(version),
            "files": [[f.path, binaries[f.binary].sha256] for f in spec.files],
            "debs": debs,
            "source_date_epoch": ctx.source_date_epoch,
            "gzip": _gzip_identity(),
            **extra,
        },
    )


def _gzip_identity() -> dict[str, str]:
    import zlib

    return {"zlib": zlib.ZLIB_RUNTIME_VERSION, "level": "9"}


def _image_from_result(ctx: BuildContext, result: ActionResult) -> oci.Image:
    md = result.metadata
    cas = ctx.cache.cas

    def blob(name: str) -> oci.Blob:
        o = result.output(name)
        return oci.Blob(digest=f"sha256:{o.sha256}", size=o.size, path=cas.path(o.sha256))

    layers = tuple(oci.Layer(blob=blob(f"layer-{i:02d}"), diff_id=d) for i, d in enumerate(md["diff_ids"]))
    return oci.Image(ref=md["ref"], manifest=blob("manifest"), config=blob("config"), layers=layers,
                     platform=tuple(md["platform"]))  # type: ignore[arg-type]


def _module_file(ctx: BuildContext, spec: ImageSpec, sf: SourceFileSpec, pin: list[str]) -> bytes:
    """A file of a module zip in the toolchain's module cache, after checking the zip against its pinned h1."""
    import zipfile

    from build.gomod import escape_path, module_zip_h1

    module, version, h1 = pin
    zpath = ctx.cache.root / "gomod" / "cache" / "download" / escape_path(module) / "@v" / f"{version}.zip"
    if not zpath.is_file():
        raise BuildError(f"{spec.path}: source_file: {module}@{version} is not in the module cache {zpath}; "
                         f"build component {sf.component} (docker mode) first")
    got = module_zip_h1(zpath)
    if got != h1:
        raise BuildError(f"{spec.path}: source_file: {zpath} hashes to {got}, the lock pins {h1}")
    member = f"{module}@{version}/{sf.source}"
    with zipfile.ZipFile(zpath) as z:
        try:
            return z.read(member)
        except KeyError:
            raise BuildError(f"{spec.path}: source_file.from: {sf.source} is not a file in {module}@{version}") from None


def build_image(ctx: BuildContext, spec: ImageSpec, binaries: dict[str, BuiltBinary],
                versions: dict[str, str], recipes: dict[str, Any] | None = None) -> tuple[oci.Image, bool]:
    """The image for ``spec`` from the cache, or built now; (image, cached)."""
    missing = [f.binary for f in spec.files if f.binary not in binaries]
    if missing:
        raise BuildError(f"{spec.path}: needs binary {', '.join(missing)}, which this build did not produce; "
                         f"build its component too (or drop --component)")
    if spec.component and spec.component not in versions:
        raise BuildError(f"{spec.path}: component: no recipe {spec.component!r} in this build")
    version = versions.get(spec.component, "")
    action = image_action(ctx, spec, version, binaries, recipes)
    key = action.key()
    hit = ctx.cache.get(key)
    if hit is not None:
        return _image_from_result(ctx, hit), True
    with ctx.cache.action_lock(key):
        hit = ctx.cache.get(key)
        if hit is not None:
            return _image_from_result(ctx, hit), True
        t0 = time.monotonic()
        ref = spec.reference(version)
        log("airgap", f"image {ref} (action {key[:12]})")
        with ctx.cache.tempdir(f"image-{spec.name}-") as wd:
            workdir = Path(wd)
            layers = []
            if spec.base:
                layers.append(oci.build_layer(oci.base_entries(), workdir, mtime=ctx.source_date_epoch, comment="base"))
            links = [oci.Entry(path=s.path, kind="symlink", target=s.target) for s in spec.symlinks]
            explicit = {e.name for e in links}  # a [[symlink]] wins over a [[links]] name of the same path
            links += [e for e in (oci.Entry(path=f"{ls.dir}/{n}", kind="symlink", target=ls.target)
                                  for ls in spec.links for n in ls.names) if e.name not in explicit]
            if spec.debs or spec.debian is not None:
                from build.download import Downloader

                dl = Downloader(ctx.cache.root / "downloads", mirror=ctx.mirror)
                entries: list[oci.Entry] = []
                for d in spec.debs:
                    url = _deb_url(d, ctx.platform.arch)
                    path = dl.download(url, sha256=d.digest(ctx.platform.arch) or "", component=f"image {spec.name}")
                    entries += deb_entries(path, exclude=DEFAULT_DEB_EXCLUDE + d.exclude, what=url)
                for url, digest in action.inputs.get("debian_pins", []):
                    path = dl.download(url, sha256=digest, component=f"image {spec.name}")
                    entries += deb_entries(path, exclude=DEFAULT_DEB_EXCLUDE + spec.debian.exclude, what=url)  # type: ignore[union-attr]
                # a packaged file wins over an applet link of the same path; an explicit [[symlink]] over both
                packaged = {e.name for e in entries} - explicit
                entries = [e for e in entries if e.name not in explicit]
                links = [e for e in links if e.name not in packaged]
                layers.append(oci.build_layer(_merge(entries + links), workdir, mtime=ctx.source_date_epoch,
                                              comment="debian packages"))
            elif links:
                layers.append(oci.build_layer(links, workdir, mtime=ctx.source_date_epoch, comment="symlinks"))
            files = [oci.binary_entry(f.path, binaries[f.binary].path, mode=f.mode, capabilities=f.capabilities)
                     for f in spec.files]
            for sf, pin in zip(spec.source_files, action.inputs.get("source_files", []), strict=True):
                files.append(oci.Entry(path=sf.path, data=_module_file(ctx, spec, sf, pin), mode=sf.mode))
            files += [oci.Entry(path=t.path, data=t.content.encode(), mode=t.mode) for t in spec.texts]
            files += [oci.Entry(path=d.path, kind="dir", mode=d.mode) for d in spec.directories]
            if files:
                layers.append(oci.build_layer(files, workdir, mtime=ctx.source_date_epoch,
                                              comment=", ".join(f.binary for f in spec.files) or "files"))
            image = oci.build_image(ref, layers, spec.config(), workdir, arch=ctx.platform.arch,
                                    created_epoch=ctx.source_date_epoch)
            outputs = []
            for name, b in [("manifest", image.manifest), ("config", image.config),
                            *((f"layer-{i:02d}", layer.blob) for i, layer in enumerate(image.layers))]:
                digest, size = ctx.cache.cas.put_file(b.path, expected=b.digest.split(":", 1)[1])
                outputs.append(OutputFile(name=name, sha256=digest, size=size, executable=False))
            result = ctx.cache.put(action, outputs, {
                "ref": ref, "platform": list(image.platform), "diff_ids": [layer.diff_id for layer in image.layers],
                "seconds": round(time.monotonic() - t0, 3),
            })
        log("airgap", f"  {ref}: {image.manifest.digest} in {time.monotonic() - t0:.1f}s")
        return _image_from_result(ctx, result), False


def _merge(entries: list[oci.Entry]) -> list[oci.Entry]:
    """Several packages' entries in one layer: directories may repeat (the first wins)."""
    seen: dict[str, oci.Entry] = {}
    for e in entries:
        prev = seen.get(e.name)
        if prev is not None and prev.kind == "dir" and e.kind == "dir":
            continue
        seen[e.name] = e
    return list(seen.values())


def archive_name(ctx: BuildContext) -> str:
    return f"mke-airgap-images-{ctx.platform.os}-{ctx.platform.arch}.tar"


LAYOUTS = ("bundle", "per-image")


def build_airgap(ctx: BuildContext, results: list[Any], dist: Path, *, specs_dir: Path | None = None,
                 names: list[str] | None = None, layout: str = "bundle") -> Path:
    """Build every image and write them into ``dist``; returns the archive's (per-image: the listing's) path.

    ``bundle``: one archive ``mke-airgap-images-<os>-<arch>.tar`` + ``.json``; ``per-image``
    (the conformance build): ``images/<name>.tar`` per image + ``images.json`` (ref -> digest, file).
    """
    try:
        return _build_airgap(ctx, results, dist, specs_dir=specs_dir, names=names, layout=layout)
    except mke_errors.ImageError as e:  # the OCI writer is the runtime's: its errors become the toolchain's
        raise ImageError(str(e)) from e


def write_per_image(ctx: BuildContext, images: dict[str, oci.Image], dist: Path) -> Path:
    """``dist/images/<name>.tar`` (one OCI archive per image) and ``dist/images.json``.

    An archive whose image and file are unchanged since the listing was written (same
    manifest digest; same size, mtime and inode) is not rewritten: a no-op build touches nothing.
    """
    listing = dist / "images.json"
    try:
        previous = json.loads(listing.read_text()).get("images", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    outdir = dist / "images"
    outdir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"schema": 1, "platform": str(ctx.platform), "images": {}}
    for name, img in sorted(images.items()):
        out = outdir / f"{name}.tar"
        prev = previous.get(img.ref, {})
        try:
            st = out.stat()
            fresh = (prev.get("digest") == img.manifest.digest and prev.get("file") == f"images/{name}.tar"
                     and prev.get("_stamp") == [st.st_size, st.st_mtime_ns, st.st_ino])
        except FileNotFoundError:
            fresh = False
        sha = prev["sha256"] if fresh else oci.write_archive([img], out, mtime=ctx.source_date_epoch)
        st = out.stat()
        doc["images"][img.ref] = {"digest": img.manifest.digest, "file": f"images/{name}.tar", "sha256": sha,
                                  "size": st.st_size, "_stamp": [st.st_size, st.st_mtime_ns, st.st_ino]}
    wanted = {f"{n}.tar" for n in images}
    for stale in outdir.glob("*.tar"):
        if stale.name not in wanted:
            stale.unlink()
    text = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    try:
        same = listing.read_bytes() == text
    except OSError:
        same = False
    if not same:
        write_atomic(listing, text)
    return listing


def _build_airgap(ctx: BuildContext, results: list[Any], dist: Path, *, specs_dir: Path | None,
                  names: list[str] | None, layout: str = "bundle") -> Path:
    t0 = time.monotonic()
    specs = load_image_specs(specs_dir or ctx.repo_root / "recipes" / "images")
    if names:
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise BuildError(f"unknown image {unknown[0]!r}: choose from {', '.join(specs)}")
        specs = {n: specs[n] for n in names}
    binaries = binaries_from_results(ctx, results)
    if not binaries:
        raise BuildError("--airgap packs the binaries this build made, and it made none (none mode?); "
                         "use --mode=docker or --mode=fetch")
    versions = {res.recipe.name: res.recipe.version for res in results}
    recipes = {res.recipe.name: res.recipe for res in results}
    images = []
    by_name: dict[str, oci.Image] = {}
    cached = 0
    with ctx.cache.shared():
        for i, spec in enumerate(specs.values()):
            image, hit = build_image(ctx, spec, binaries, versions, recipes)
            images.append(image)
            by_name[spec.name] = image
            cached += hit
            log("airgap", f"[{i + 1}/{len(specs)}] {image.ref} {'cached' if hit else 'built'}")
        if layout == "per-image":
            listing = write_per_image(ctx, by_name, dist)
            _print_images(images)
            print(f"mke build: images={len(images)} cached={cached} {listing} ({time.monotonic() - t0:.2f}s)",
                  file=sys.stderr)
            return listing
        out = dist / archive_name(ctx)
        listing = out.with_suffix(".json")
        doc = {
            "schema": 1,
            "platform": str(ctx.platform),
            "images": [img.describe() for img in sorted(images, key=lambda i: i.ref)],
        }
        try:
            previous = json.loads(listing.read_text())
            fresh = previous.get("images") == doc["images"] and sha256_file(out) == previous.get("sha256")
        except (OSError, ValueError):
            fresh = False
        if not fresh:
            doc["sha256"] = oci.write_archive(images, out, mtime=ctx.source_date_epoch)
            write_atomic(listing, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
        else:
            doc["sha256"] = previous["sha256"]
    _print_images(images)
    print(f"mke build: airgap images={len(images)} cached={cached} {out} sha256={doc['sha256']} "
          f"({out.stat().st_size / 2**20:.1f} MiB, {time.monotonic() - t0:.2f}s)", file=sys.stderr)
    return out


def _print_images(images: list[oci.Image]) -> None:
    width = max(len(i.ref) for i in images)
    for img in sorted(images, key=lambda i: i.ref):
        print(f"  {img.ref.ljust(width)}  {img.manifest.digest}  {img.describe()['size'] / 2**20:6.1f} MiB", file=sys.stderr)
