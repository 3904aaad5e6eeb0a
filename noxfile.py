"""Sessions of the mke toolchain. `nox -l` lists them; slow ones are not default.

    nox -s tests                      unit + integration tests, then lint (what CI runs)
    nox -s lint                       ruff (rules in pyproject.toml)
    nox -s build -- --mode=docker     build dist/ (fetch|docker|none; see docs/build.md)
    nox -s build-fips                 the FIPS variant
    nox -s recipes                    components, versions, modes
    nox -s cache -- stats|gc|verify   inspect the content-addressed cache
    nox -s lock                       pin artifact digests and Go module sums (connected machine)
    nox -s bench                      benchmarks, printed as ratios against a same-run baseline
    nox -s e2e                        a real cluster (long)
    nox -s e2e-fips                   the same on dist/mke-fips (MKE_E2E_FIPS=1)
    nox -s conformance-build          e2e.test, ginkgo, registry and the conformance images (long)
    nox -s conformance                the Kubernetes conformance suite on dist/mke (longer)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

REPO = Path(__file__).resolve().parent
BUILD_REQS = REPO / "requirements" / "build.txt"
TEST_REQS = REPO / "requirements" / "test.txt"


def _install(session: nox.Session, *req_files: Path) -> None:
    """Install pinned requirements once per venv; later runs skip pip (fast no-op builds)."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in (BUILD_REQS, *req_files))).hexdigest()
    stamp = Path(session.virtualenv.location) / ".mke-requirements"
    if stamp.exists() and stamp.read_text() == digest:
        return
    for req in req_files:
        session.install("-r", str(req))
    stamp.write_text(digest)


def _toolchain(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "build.cli", *args, env={"PYTHONPATH": str(REPO)})


FIPS_RUNTIME_TESTS = ["tests/integration/test_fips_bundle.py", "tests/integration/test_fips_runtime.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests (pytest args pass through: nox -s tests -- -k cache).

    Without arguments it also runs `tests-fips` afterwards (the FIPS runtime tests need a
    venv whose cryptography links the system libcrypto, which this venv must not have),
    then `lint`.
    """
    _install(session, TEST_REQS)
    if session.posargs:
        session.run("python", "-m", "pytest", *session.posargs, env={"PYTHONPATH": str(REPO)})
        return
    session.run("python", "-m", "pytest", "tests/unit", "tests/integration",
                *[f"--ignore={t}" for t in FIPS_RUNTIME_TESTS], env={"PYTHONPATH": str(REPO)})
    session.notify("tests-fips")
    session.notify("lint")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository (rules in pyproject.toml); fails on any finding."""
    session.install("-r", str(REPO / "requirements" / "lint.txt"))
    session.run("ruff", "check", "--no-cache", "noxfile.py", "mke", "build", "fips", "tests")


@nox.session(name="tests-fips")
def tests_fips(session: nox.Session) -> None:
    """FIPS runtime tests in their own venv: cryptography built against the system OpenSSL."""
    _install(session, TEST_REQS)
    # The OpenSSL FIPS provider and the system-linked cryptography wheel (built once, cached).
    session.run("python", "-m", "fips.runtime", "prepare", "--install", env={"PYTHONPATH": str(REPO)})
    session.run("python", "-m", "pytest", *FIPS_RUNTIME_TESTS, env={"PYTHONPATH": str(REPO)})


@nox.session
def build(session: nox.Session) -> None:
    """Build dist/: nox -s build -- --mode=fetch|docker|none [--arch ..] [--component ..] [--jobs N]."""
    _install(session, BUILD_REQS)
    _toolchain(session, "build", "--bundle", *session.posargs)


@nox.session(name="build-fips")
def build_fips(session: nox.Session) -> None:
    """The FIPS variant: docker mode with the FIPS toolchain from fips/."""
    _install(session, BUILD_REQS)
    _toolchain(session, "build", "--bundle", "--mode=docker", "--fips", *session.posargs)


@nox.session
def recipes(session: nox.Session) -> None:
    """Print the table of components, versions and the modes each supports."""
    _install(session, BUILD_REQS)
    _toolchain(session, "recipes", *session.posargs)


@nox.session
def cache(session: nox.Session) -> None:
    """Inspect the cache: nox -s cache -- stats|gc|verify [--cache-dir DIR]."""
    _install(session, BUILD_REQS)
    _toolchain(session, "cache", *(session.posargs or ["stats"]))


@nox.session
def lock(session: nox.Session) -> None:
    """Fill recipes/recipes.lock from upstream checksum files and the Go checksum database;
    `-- --update` moves each Go-source recipe to its newest patch release first (docs/recipes.md)."""
    _install(session, BUILD_REQS)
    _toolchain(session, "lock", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (slow): each figure is a ratio against a baseline measured in the same run."""
    _install(session, TEST_REQS)
    session.run("python", "-m", "tests.bench", *session.posargs, env={"PYTHONPATH": str(REPO)})


@nox.session(name="bench-build")
def bench_build(session: nox.Session) -> None:
    """The benchmarks' own tools from source (recipes/bench: kwok for the scale benchmark, issue 18),
    docker mode, into dist/bench/bin; not embedded in dist/mke (~9 min cold on 2 cores, seconds cached)."""
    _install(session, BUILD_REQS)
    _toolchain(session, "build", "--recipes-dir", str(REPO / "recipes" / "bench"), "--mode=docker", "--no-bundle",
               "--dist-layout=flat", "--dist", str(REPO / "dist" / "bench"), *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """End-to-end cluster tests (root; ~10 min with a warm cache, ~2 h cold): builds or reuses the default
    dist/mke, then a controller + 2 workers on kernel-only hosts (network namespaces and bare
    roots holding only dist/mke; tests/e2e); then the quick conformance subset on a cluster of its
    own (tests/conformance/quick.py; builds the suite with conformance-build). MKE_E2E_SKIP_BUILD=1
    uses dist/ as it is; MKE_E2E_NO_CONFORMANCE=1 leaves the conformance subset out. MKE_E2E_FIPS=1
    does all of it on the FIPS build, dist/mke-fips (as `nox -s e2e-fips`)."""
    _e2e(session, fips=bool(os.environ.get("MKE_E2E_FIPS", "") not in ("", "0")))


@nox.session(name="e2e-fips")
def e2e_fips(session: nox.Session) -> None:
    """The e2e session on the FIPS build: `nox -s build-fips` (unless MKE_E2E_SKIP_BUILD=1), then the same
    tests and quick conformance subset with every host running dist/mke-fips (MKE_E2E_FIPS=1; docs/fips.md)."""
    _e2e(session, fips=True)


def _e2e(session: nox.Session, *, fips: bool) -> None:
    _install(session, TEST_REQS)
    quick = not os.environ.get("MKE_E2E_NO_CONFORMANCE")
    env = {"PYTHONPATH": str(REPO), **({"MKE_E2E_FIPS": "1"} if fips else {})}
    if not os.environ.get("MKE_E2E_SKIP_BUILD"):
        if fips:
            _toolchain(session, "build", "--bundle", "--mode=docker", "--fips")  # = nox -s build-fips
        else:
            _toolchain(session, "build", "--mode=docker", "--bundle")
        if quick:
            _toolchain(session, *CONFORMANCE_BUILD, "--dist", str(REPO / "dist" / "conformance"))
    elif fips and not (REPO / "dist" / "mke-fips").exists():
        session.error(f"{REPO / 'dist' / 'mke-fips'} is missing (MKE_E2E_FIPS=1, MKE_E2E_SKIP_BUILD=1): "
                      "run `nox -s build-fips` first")
    session.run("python", "-m", "pytest", "-m", "e2e", "tests/e2e", "-p", "no:cacheprovider", *session.posargs,
                env=env)
    if quick:
        session.run("python", "-m", "tests.conformance", "--quick", env=env)


CONFORMANCE_BUILD = ["build", "--recipes-dir", str(REPO / "recipes" / "conformance"), "--mode=docker", "--no-bundle",
                     "--dist-layout=flat", "--airgap", "--airgap-layout=per-image"]


@nox.session(name="conformance-build")
def conformance_build(session: nox.Session) -> None:
    """The conformance suite and its images, from source (docker mode; ~1 h cold, seconds cached):
    dist/conformance/{bin/e2e.test,bin/ginkgo,bin/registry,images/*.tar,images.json}.

    Extra arguments pass through to `python -m build.cli build` (e.g. --dist DIR, --jobs N);
    the underlying command is `python -m build.cli build` + CONFORMANCE_BUILD (docs/conformance.md).
    """
    _install(session, BUILD_REQS)
    dist = [] if any(a == "--dist" or a.startswith("--dist=") for a in session.posargs) else \
        ["--dist", str(REPO / "dist" / "conformance")]
    _toolchain(session, *CONFORMANCE_BUILD, *dist, *session.posargs)


@nox.session
def conformance(session: nox.Session) -> None:
    """The Kubernetes conformance suite on a controller + 2 workers of dist/mke (root, Docker; long:
    see docs/conformance.md for the duration): builds dist/mke and the suite with its images
    (`conformance-build`) unless MKE_CONFORMANCE_SKIP_BUILD=1, then tests/conformance/run.py.
    Arguments after -- go to the runner: --storage kine, --procs N, --focus RE, --update-docs."""
    if os.geteuid() != 0:
        session.error("the conformance run needs root (network and mount namespaces, cgroups): run it with sudo")
    _install(session, TEST_REQS)
    if not os.environ.get("MKE_CONFORMANCE_SKIP_BUILD"):
        if not Path("/var/run/docker.sock").exists():
            session.error("the conformance build needs a Docker engine (/var/run/docker.sock is missing): "
                          "run ./scripts/bootstrap.sh, or MKE_CONFORMANCE_SKIP_BUILD=1 with dist/ already built")
        _toolchain(session, "build", "--mode=docker", "--bundle")
        _toolchain(session, *CONFORMANCE_BUILD, "--dist", str(REPO / "dist" / "conformance"))
    session.run("python", "-m", "tests.conformance", *session.posargs, env={"PYTHONPATH": str(REPO)})
