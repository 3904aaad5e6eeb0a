"""Air-gap image bundles: the images a cluster pulls, built from this build's own binaries.

``recipes/images/<name>.toml`` describes one image (reference, entrypoint, user, which
built binary goes where, optional Debian packages); ``build_airgap`` turns the specs
into OCI images with ``build/oci.py`` and writes
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
import sys
import time
from pathlib import Path
from typing import Any

from build import oci
from build.action import Action
from build.cache import ActionResult, OutputFile
from build.errors import BuildError, ImageError, RecipeError
from build.fsutil import sha256_file, write_atomic
from build.modes.base import BuildContext
from build.progress import log
from build.recipes import NAME_RE, render
from build.tomlcheck import TomlChecker, read_toml

SPEC_SCHEMA = 1
IMAGE_ACTION_SCHEMA = 1  # bump when build/oci.py changes the bytes it writes
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
class ImageSpec:
    name: str
    ref: str  # template with {version}
    component: str  # the recipe whose version fills {version}
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

    def reference(self, version: str) -> str:
        return render(self.ref, version=version)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d

    def config(self) -> oci.ImageConfig:
        env = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *self.env)
        return oci.ImageConfig(entrypoint=self.entrypoint, cmd=self.cmd, env=env, user=self.user,
                               exposed_ports=self.exposed_ports)


def parse_image_spec(path: Path, data: dict) -> ImageSpec:
    ctx = TomlChecker(path)
    top = {"schema", "name", "ref", "component", "base", "entrypoint", "cmd", "user", "env", "exposed_ports",
           "description", "file", "deb", "symlink"}
    schema = ctx.get("", data, "schema", int)
    if schema != SPEC_SCHEMA:
        raise ctx.fail("schema", f"unsupported image spec schema {schema}; this toolchain reads schema {SPEC_SCHEMA}")
    ctx.keys("", data, top, {"schema", "name", "ref", "component", "file"})
    name = ctx.get("", data, "name", str)
    if not NAME_RE.match(name):
        raise ctx.fail("name", f"{name!r} is not a valid image name (lowercase letters, digits, '-')")
    if path.suffix == ".toml" and path.stem != name:
        raise ctx.fail("name", f"{name!r} does not match the file name; rename the file to {name}.toml")
    ref = ctx.template("ref", ctx.get("", data, "ref", str), frozenset({"version"}))
    try:
        oci.split_ref(ref.replace("{version}", "0"))
    except ImageError as e:
        raise ctx.fail("ref", str(e).split(": ", 1)[-1]) from None
    files = []
    for i, t in enumerate(ctx.get("", data, "file", list)):
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
    if not files:
        raise ctx.fail("file", "list at least one [[file]]")
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
    return ImageSpec(
        name=name, ref=ref, component=ctx.get("", data, "component", str),
        base=ctx.get("", data, "base", bool, True),
        entrypoint=ctx.str_list("", data, "entrypoint", ()), cmd=ctx.str_list("", data, "cmd", ()),
        user=ctx.get("", data, "user", str, "") if data.get("user") != "" else "",
        env=ctx.str_list("", data, "env", ()), exposed_ports=ctx.str_list("", data, "exposed_ports", ()),
        files=tuple(files), debs=tuple(debs), symlinks=tuple(links), path=path,
    )


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


def image_action(ctx: BuildContext, spec: ImageSpec, version: str, binaries: dict[str, BuiltBinary]) -> Action:
    arch = ctx.platform.arch
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


def build_image(ctx: BuildContext, spec: ImageSpec, binaries: dict[str, BuiltBinary],
                versions: dict[str, str]) -> tuple[oci.Image, bool]:
    """The image for ``spec`` from the cache, or built now; (image, cached)."""
    missing = [f.binary for f in spec.files if f.binary not in binaries]
    if missing:
        raise BuildError(f"{spec.path}: needs binary {', '.join(missing)}, which this build did not produce; "
                         f"build its component too (or drop --component)")
    if spec.component not in versions:
        raise BuildError(f"{spec.path}: component: no recipe {spec.component!r} in this build")
    version = versions[spec.component]
    action = image_action(ctx, spec, version, binaries)
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
            if spec.debs:
                from build.download import Downloader

                dl = Downloader(ctx.cache.root / "downloads", mirror=ctx.mirror)
                entries: list[oci.Entry] = []
                for d in spec.debs:
                    url = _deb_url(d, ctx.platform.arch)
                    path = dl.download(url, sha256=d.digest(ctx.platform.arch) or "", component=f"image {spec.name}")
                    entries += oci.deb_entries(path, exclude=DEFAULT_DEB_EXCLUDE + d.exclude, what=url)
                entries += [oci.Entry(path=s.path, kind="symlink", target=s.target) for s in spec.symlinks]
                layers.append(oci.build_layer(_merge(entries), workdir, mtime=ctx.source_date_epoch,
                                              comment="debian packages"))
            elif spec.symlinks:
                layers.append(oci.build_layer([oci.Entry(path=s.path, kind="symlink", target=s.target)
                                               for s in spec.symlinks], workdir, mtime=ctx.source_date_epoch,
                                              comment="symlinks"))
            files = [oci.binary_entry(f.path, binaries[f.binary].path, mode=f.mode, capabilities=f.capabilities)
                     for f in spec.files]
            layers.append(oci.build_layer(files, workdir, mtime=ctx.source_date_epoch,
                                          comment=", ".join(f.binary for f in spec.files)))
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


def build_airgap(ctx: BuildContext, results: list[Any], dist: Path, *, specs_dir: Path | None = None,
                 names: list[str] | None = None) -> Path:
    """Build every image and write the bundle into ``dist``; returns the archive's path."""
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
    images = []
    cached = 0
    with ctx.cache.shared():
        for spec in specs.values():
            image, hit = build_image(ctx, spec, binaries, versions)
            images.append(image)
            cached += hit
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
    width = max(len(i.ref) for i in images)
    for img in sorted(images, key=lambda i: i.ref):
        print(f"  {img.ref.ljust(width)}  {img.manifest.digest}  {img.describe()['size'] / 2**20:6.1f} MiB", file=sys.stderr)
    print(f"mke build: airgap images={len(images)} cached={cached} {out} sha256={doc['sha256']} "
          f"({out.stat().st_size / 2**20:.1f} MiB, {time.monotonic() - t0:.2f}s)", file=sys.stderr)
    return out
