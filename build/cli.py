"""Command line of the toolchain: ``python -m build.cli <command>`` (nox sessions call this).

Commands: build, recipes, cache {stats,gc,verify}, lock. Only ``main`` catches
``BuildError`` (and ``OSError``): it prints one line and exits with the error's code
(the table is in build/errors.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from build import progress
from build.cache import Cache, default_cache_dir
from build.errors import BuildError, UsageError, report
from build.lockfile import Lockfile
from build.modes import MODES, get_mode
from build.modes.base import BuildContext
from build.pipeline import build_all, write_dist
from build.platform import Platform, supported_arches
from build.recipes import Recipe, load_recipes

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODE = "docker"


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipes-dir", type=Path, default=REPO / "recipes", help="directory of recipe TOML files")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache root (default $MKE_CACHE_DIR or ~/.cache/mke)")


def select_recipes(recipes: dict[str, Recipe], names: list[str]) -> list[Recipe]:
    if not names:
        return list(recipes.values())
    wanted: list[str] = []
    for n in names:
        wanted += [x for x in n.split(",") if x]
    by_binary = {b: r.name for r in recipes.values() for b in r.binary_names}
    out: list[Recipe] = []
    for n in wanted:
        name = n if n in recipes else by_binary.get(n)
        if name is None:
            raise UsageError(f"unknown component {n!r}: choose from {', '.join(recipes)}")
        if recipes[name] not in out:
            out.append(recipes[name])
    return out


def cmd_build(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if args.mode not in MODES:
        raise UsageError(f"unknown mode {args.mode!r}: choose one of {', '.join(MODES)}")
    if getattr(args, "airgap", False) and args.mode == "none":  # before dist/ is written, not after
        raise UsageError("--airgap packs the binaries the build makes, and --mode=none makes none; "
                         "use --mode=docker or --mode=fetch")
    platform = Platform.parse(args.arch) if args.arch else Platform.host()
    recipes = select_recipes(load_recipes(args.recipes_dir), args.component or [])
    lock_path = args.lock or args.recipes_dir / "recipes.lock"
    lock = Lockfile.load(lock_path) if lock_path.exists() or args.mode != "none" else Lockfile.empty(lock_path)
    _check_dir_can_be(args.dist, "--dist")  # now, not after every component was fetched or built
    cache = Cache(args.cache_dir or default_cache_dir())
    mirror = args.mirror or os.environ.get("MKE_MIRROR") or None
    ctx = BuildContext(
        cache=cache,
        lock=lock,
        platform=platform,
        jobs=args.jobs,
        mirror=mirror,
        allow_unpinned=args.allow_unpinned,
        fips=args.fips,
        source_date_epoch=int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0),
        repo_root=REPO,
        options=_mode_options(args),
    )
    mode = get_mode(args.mode)
    results = build_all(ctx, mode, recipes)
    manifest = write_dist(ctx, args.mode, results, args.dist, flat=args.dist_layout == "flat")
    built = sum(1 for r in results if r.result and not r.cached)
    cached = sum(1 for r in results if r.cached)
    print(
        f"mke build: mode={args.mode} platform={platform} components={len(results)} "
        f"built={built} cached={cached} manifest={manifest} ({time.monotonic() - t0:.2f}s)",
        file=sys.stderr,
    )
    if args.opt_check_reproducible:
        from build.reproducible import check_reproducible

        check_reproducible(ctx, args.mode, recipes, results)
    _after_build(args, ctx, results, manifest)
    return 0


def _check_dir_can_be(path: Path, flag: str) -> None:
    """HostError unless ``path`` is a directory or could be made one (its nearest existing ancestor is one)."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        from build.errors import HostError

        raise HostError(f"{p}: exists and is not a directory ({flag} {path})")


def _mode_options(args: argparse.Namespace) -> dict:
    """Extra, mode-specific flags (see the hooks the modes read)."""
    return {k: v for k, v in vars(args).items() if k.startswith("opt_")}


def _after_build(args, ctx, results, manifest) -> None:
    """Steps that run after the binaries are in dist/ (the bundler hooks in here)."""
    if ctx.fips:  # every binary proves it is FIPS, or the build fails naming it (fips/, docs/fips.md)
        from build.fips_check import verify_dist

        verify_dist(manifest, fips=True, go_mode=getattr(args, "opt_fips_go", None))
    if getattr(args, "airgap", False):
        from build import airgap  # dist/mke-airgap-images-<os>-<arch>.tar (issue 4)

        airgap.build_airgap(ctx, results, args.dist, specs_dir=args.airgap_specs or args.recipes_dir / "images",
                            layout=args.airgap_layout)
    if not getattr(args, "bundle", False):
        return
    from build import bundle  # the bundler (issue 7): dist/mke, SHA256SUMS, SBOM

    bundle.write_bundle(cache=ctx.cache, manifest_path=manifest, dist=args.dist, layout=args.payload_layout,
                        jobs=args.jobs, source_date_epoch=ctx.source_date_epoch, mirror=ctx.mirror,
                        fips_go=getattr(args, "opt_fips_go", None), compression_level=args.compression_level)


def _number(kind: type, what: str, low: float, high: float = float("inf")) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` within [low, high], else "'TEXT' is not WHAT"."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    return parse


_zstd_level = _number(int, "a zstd level from 1 to 22", 1, 22)
_jobs = _number(int, "a number of jobs (1 or more)", 1)
_days = _number(float, "a number of days (0 or more)", 0)  # a negative age would drop every result


def cmd_recipes(args: argparse.Namespace) -> int:
    recipes = load_recipes(args.recipes_dir)
    if args.json:
        print(json.dumps([
            {"component": r.name, "version": r.version, "binaries": list(r.binary_names), "modes": list(r.modes()),
             "license": r.license, "homepage": r.homepage} for r in recipes.values()
        ], indent=2))
        return 0
    rows = [("COMPONENT", "VERSION", "MODES", "BINARIES")]
    for r in recipes.values():
        rows.append((r.name, r.version, ",".join(r.modes()), " ".join(r.binary_names)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:3])) + "  " + row[3])
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    cache = Cache(args.cache_dir or default_cache_dir())
    if args.action == "stats":
        s = cache.stats()
        print(f"cache {s['root']}: {s['actions']} actions, {s['blobs']} blobs, "
              f"{s['blob_bytes'] / 2**20:.1f} MiB, {s['partial_downloads']} files in downloads/")
    elif args.action == "verify":
        with cache.shared():
            problems = cache.verify_all()
        for p in problems:
            print(p)
        print(f"cache verify: {len(problems)} problem(s) in {cache.root}")
        return 1 if problems else 0
    elif args.action == "gc":
        removed = cache.gc(max_age_days=args.max_age_days)
        print("cache gc: removed " + ", ".join(f"{v} {k}" for k, v in removed.items()))
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from build.pins import update_lock

    recipes = select_recipes(load_recipes(args.recipes_dir), args.component or [])
    platforms = [Platform.parse(a) for a in (args.arch or list(supported_arches()))]
    lock_path = args.lock or args.recipes_dir / "recipes.lock"
    mirror = args.mirror or os.environ.get("MKE_MIRROR") or None
    if args.update:
        return cmd_update(args, recipes, platforms, lock_path, mirror)
    if not args.image or args.component:
        update_lock(lock_path, recipes, platforms, mirror=mirror, fetch=not args.source_only, source=not args.fetch_only)
    images_dir = args.recipes_dir / "images"
    if not args.fetch_only and (args.image or not args.component) and images_dir.is_dir():
        from build.pins import update_image_pins

        update_image_pins(lock_path, images_dir, [p.arch for p in platforms], names=args.image or [])
    return 0


def cmd_update(args: argparse.Namespace, recipes: list, platforms: list, lock_path: Path, mirror: str | None) -> int:
    """``lock --update``: newer patch releases of every Go-source recipe (build/updates.py)."""
    from build import updates
    from build.pins import update_lock
    from build.progress import log

    proxy = updates.Proxy(updates.goproxy_url(args.goproxy))
    log("update", f"probing {proxy.base} for newer releases of {len(recipes)} recipes' modules")
    plan = updates.plan(recipes, proxy, allow_minor=args.allow_minor)
    print(updates.table(plan))
    changed = [u for u in plan if u.changed]
    if not changed:
        print(f"update: every module is at its newest {'release' if args.allow_minor else 'patch release'} "
              f"({proxy.requests} proxy requests); nothing to change")
        return 0
    if args.dry_run:
        print(f"update: {len(changed)} to update; --dry-run: nothing written")
        return 0
    updates.apply(plan, lock_path, pin=lambda rs: update_lock(lock_path, rs, platforms, mirror=mirror,
                                                             fetch=not args.source_only, source=True))
    for u in changed:
        print(f"update: {u.path}: {u.old} -> {u.new}")
    if args.source_only:
        print("update: fetch-mode pins were not refreshed (--source-only): run `nox -s lock -- --fetch-only` "
              "where the upstream release pages are reachable")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mke-build", description="Build the binaries mke embeds.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("build", help="fetch or build every embedded binary into the cache and dist/")
    _add_common(b)
    b.add_argument("--mode", default=DEFAULT_MODE, help=f"one of {', '.join(MODES)} (default {DEFAULT_MODE})")
    b.add_argument("--arch", default=None, help=f"target arch: {', '.join(supported_arches())} (default: host)")
    b.add_argument("--component", action="append", help="build only this component or binary (repeatable)")
    b.add_argument("--mirror", default=None, help="rewrite upstream URLs onto this mirror (env MKE_MIRROR)")
    b.add_argument("--jobs", type=_jobs, default=os.cpu_count() or 2, help="parallel downloads/builds")
    b.add_argument("--lock", type=Path, default=None, help="lock file (default RECIPES_DIR/recipes.lock)")
    b.add_argument("--allow-unpinned", action="store_true", help="trust upstream checksum files for unpinned artifacts")
    b.add_argument("--fips", action="store_true", help="build with the FIPS toolchain (see nox -s build-fips)")
    b.add_argument("--fips-go", dest="opt_fips_go", choices=["native", "boring"], default=None,
                   help="with --fips: Go's own FIPS 140-3 module (native, default) or BoringCrypto (boring); docs/fips.md")
    b.add_argument("--dist", type=Path, default=REPO / "dist", help="output directory (default dist/)")
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    b.add_argument("--bundle", action=argparse.BooleanOptionalAction, default=False,
                   help="also write dist/mke (dist/mke-fips with --fips), SHA256SUMS and the SBOM "
                        "(nox -s build passes --bundle)")
    b.add_argument("--airgap", action="store_true",
                   help="also write dist/mke-airgap-images-<os>-<arch>.tar from recipes/images/ (docker or fetch mode)")
    b.add_argument("--airgap-specs", type=Path, default=None,
                   help="image specs for --airgap (default RECIPES_DIR/images)")
    b.add_argument("--airgap-layout", default="bundle", choices=["bundle", "per-image"],
                   help="--airgap output: one archive + .json (bundle, default), or DIST/images/<name>.tar "
                        "+ DIST/images.json (per-image: the conformance build)")
    b.add_argument("--dist-layout", default="platform", choices=["platform", "flat"],
                   help="binaries in DIST/<os>-<arch>/bin (platform, default) or DIST/bin (flat: one platform)")
    b.add_argument("--compression-level", type=_zstd_level, default=19, metavar="1-22",
                   help="zstd level of the payload's frames (default 19; low levels bundle in seconds, for tests)")
    b.add_argument("--payload-layout", default="groups", choices=["groups", "per-binary", "solid"],
                   help="how binaries are grouped into zstd frames in dist/mke (default: groups; docs/payload.md)")
    b.add_argument("--check-reproducible", dest="opt_check_reproducible", action="store_true",
                   help="rebuild from clean state (fresh cache, fresh Go build cache) and compare every digest")
    b.add_argument("--go-cache-volume", dest="opt_go_cache_volume", default=None,
                   help="docker mode: Docker volume for the persistent Go build cache (default mke-go-build-cache)")
    b.add_argument("--builder-spec", dest="opt_builder_spec", type=Path, default=None,
                   help="docker mode: builder image spec (default recipes/builders/go-builder.toml)")
    b.set_defaults(func=cmd_build)

    r = sub.add_parser("recipes", help="list components, versions and supported modes")
    _add_common(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_recipes)

    c = sub.add_parser("cache", help="inspect or clean the cache")
    _add_common(c)
    c.add_argument("action", choices=["stats", "gc", "verify"])
    c.add_argument("--max-age-days", type=_days, default=None, help="gc: also drop results older than this")
    c.set_defaults(func=cmd_cache)

    lk = sub.add_parser("lock", help="pin artifact digests and Go module sums into recipes.lock")
    _add_common(lk)
    lk.add_argument("--component", action="append")
    lk.add_argument("--arch", action="append")
    lk.add_argument("--mirror", default=None)
    lk.add_argument("--lock", type=Path, default=None)
    lk.add_argument("--fetch-only", action="store_true")
    lk.add_argument("--source-only", action="store_true")
    lk.add_argument("--image", action="append",
                    help="pin the [debian] packages of this image spec (RECIPES_DIR/images; repeatable); "
                         "without --component or --image every spec with [debian] is pinned")
    lk.add_argument("--update", action="store_true",
                    help="move each Go-source recipe to the newest patch release the Go module proxy serves, "
                         "rewrite the recipes and re-pin them; prints old -> new")
    lk.add_argument("--allow-minor", action="store_true", help="--update: also cross to a newer minor release")
    lk.add_argument("--dry-run", action="store_true", help="--update: print the table, write nothing")
    lk.add_argument("--goproxy", default=None,
                    help="--update: the Go module proxy to ask (default: $GOPROXY, else https://proxy.golang.org)")
    lk.set_defaults(func=cmd_lock)
    return p


PARSER_HOOKS: list = []  # callables(parser) that add mode-specific flags


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # unwind: temp files and partial outputs are removed on the way out


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = make_parser()
    for hook in PARSER_HOOKS:
        hook(parser)
    try:
        args = parser.parse_args(argv)
        progress.set_quiet(getattr(args, "quiet", False))
        return args.func(args)
    except (BuildError, OSError) as e:
        return report(e)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
