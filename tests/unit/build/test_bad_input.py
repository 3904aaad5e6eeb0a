"""Every error a user can cause in the toolchain's command line ends in one line (issue 19.1).

A table of bad inputs for ``python -m build.cli`` (build, recipes, cache, lock): each ends with
its error class's exit code (build/errors.py, by class), exactly one ``error:`` line on stderr
naming the flag or file at fault, no traceback, and nothing written: every dist, cache and lock
path a case names is under ``tmp_path``, which is the same before and after. No case reaches
the network or Docker: each fails on its input first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from build import errors
from build.errors import BuildError, CacheError, HostError, LockfileError, RecipeError, UsageError
from tests.support.badinput import assert_one_line, snapshot, sub, write_files

REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 60


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    error: type[BuildError]
    fragment: str  # ({tmp}: the case's tmp_path)
    files: dict[str, str | None] = field(default_factory=dict)  # None: a directory


def C(id: str, argv: str, error: type[BuildError], fragment: str, **kw) -> Case:
    return Case(id, tuple(argv.split()), error, fragment, **kw)


OUT = "--cache-dir {tmp}/cache --dist {tmp}/dist"  # never the repository's dist/ nor ~/.cache/mke
NONE = f"build --mode none --no-bundle --quiet {OUT}"
BAD_RECIPE = {"recipes/x.toml": 'name = "x"\nversion = \n'}
UNKNOWN_KEY = {"recipes/x.toml": 'name = "x"\nversion = "1"\nlicence = "MIT"\n'}

CASES: list[Case] = [
    C("no-command", "", UsageError, "command"),
    C("unknown-command", "compile", UsageError, "invalid choice: 'compile'"),
    C("build-bad-mode", f"build --mode bogus {OUT}", UsageError, "unknown mode 'bogus'"),
    C("build-bad-arch", f"{NONE} --arch s390x", UsageError, "unknown arch 's390x'"),
    C("build-bad-component", f"{NONE} --component nope", UsageError, "unknown component 'nope'"),
    C("build-bad-component-in-list", f"{NONE} --component runc,nope", UsageError, "unknown component 'nope'"),
    C("build-jobs-not-int", f"{NONE} --jobs x", UsageError, "--jobs"),
    C("build-jobs-zero", f"{NONE} --jobs 0", UsageError, "--jobs"),
    C("build-jobs-negative", f"{NONE} --jobs=-1", UsageError, "--jobs"),
    C("build-compression-zero", f"{NONE} --compression-level 0", UsageError, "--compression-level"),
    C("build-compression-high", f"{NONE} --compression-level 23", UsageError, "--compression-level"),
    C("build-compression-word", f"{NONE} --compression-level max", UsageError, "--compression-level"),
    C("build-payload-layout", f"{NONE} --payload-layout zip", UsageError, "--payload-layout"),
    C("build-dist-layout", f"{NONE} --dist-layout deep", UsageError, "--dist-layout"),
    C("build-airgap-layout", f"{NONE} --airgap-layout tar", UsageError, "--airgap-layout"),
    C("build-fips-go", f"{NONE} --fips --fips-go openssl", UsageError, "--fips-go"),
    C("build-airgap-none-mode", f"{NONE} --airgap", UsageError, "--airgap"),
    C("build-unknown-flag", f"{NONE} --fast", UsageError, "--fast"),
    C("build-dist-etc-passwd", "build --mode none --no-bundle --quiet --cache-dir {tmp}/cache --dist /etc/passwd",
      HostError, "/etc/passwd: exists and is not a directory (--dist /etc/passwd)"),
    C("build-dist-under-file", f"{NONE} --dist {{tmp}}/file/dist", HostError, "{tmp}/file: exists and is not a directory",
      files={"file": "x\n"}),
    C("build-cache-etc-passwd", "build --mode none --no-bundle --quiet --cache-dir /etc/passwd --dist {tmp}/dist",
      CacheError, "/etc/passwd"),
    C("build-recipes-missing", f"{NONE} --recipes-dir {{tmp}}/nope", RecipeError, "{tmp}/nope"),
    C("build-recipes-file", f"{NONE} --recipes-dir {{tmp}}/file", RecipeError, "{tmp}/file", files={"file": "x\n"}),
    C("build-recipes-empty", f"{NONE} --recipes-dir {{tmp}}/recipes", RecipeError, "{tmp}/recipes",
      files={"recipes": None}),
    C("build-recipes-bad-toml", f"{NONE} --recipes-dir {{tmp}}/recipes", RecipeError, "{tmp}/recipes/x.toml",
      files=BAD_RECIPE),
    C("build-recipes-unknown-key", f"{NONE} --recipes-dir {{tmp}}/recipes", RecipeError, "{tmp}/recipes/x.toml",
      files=UNKNOWN_KEY),
    C("build-lock-missing", f"build --mode fetch --component runc --lock {{tmp}}/nope.lock {OUT}", LockfileError,
      "{tmp}/nope.lock"),
    C("build-lock-junk", f"build --mode fetch --component runc --lock {{tmp}}/junk.lock {OUT}", LockfileError,
      "{tmp}/junk.lock", files={"junk.lock": "not json\n"}),
    C("build-lock-dir", f"build --mode fetch --component runc --lock {{tmp}}/dir {OUT}", LockfileError,
      "{tmp}/dir", files={"dir": None}),
    C("recipes-missing-dir", "recipes --recipes-dir {tmp}/nope", RecipeError, "{tmp}/nope"),
    C("recipes-bad-toml", "recipes --recipes-dir {tmp}/recipes", RecipeError, "{tmp}/recipes/x.toml", files=BAD_RECIPE),
    C("recipes-json-value", "recipes --json=yes", UsageError, "--json"),
    C("cache-no-action", "cache --cache-dir {tmp}/cache", UsageError, "action"),
    C("cache-bad-action", "cache purge --cache-dir {tmp}/cache", UsageError, "invalid choice: 'purge'"),
    C("cache-stats-etc-passwd", "cache stats --cache-dir /etc/passwd", CacheError, "/etc/passwd"),
    C("cache-gc-bad-age", "cache gc --max-age-days soon --cache-dir {tmp}/cache", UsageError, "--max-age-days"),
    C("cache-gc-negative-age", "cache gc --max-age-days=-3 --cache-dir {tmp}/cache", UsageError, "--max-age-days"),
    C("lock-bad-arch", "lock --arch s390x --lock {tmp}/recipes.lock", UsageError, "unknown arch 's390x'"),
    C("lock-bad-component", "lock --component nope --lock {tmp}/recipes.lock", UsageError, "unknown component 'nope'"),
    C("lock-bad-recipes", "lock --recipes-dir {tmp}/recipes --lock {tmp}/recipes.lock", RecipeError,
      "{tmp}/recipes/x.toml", files=BAD_RECIPE),
]


def test_the_table_covers_every_command():
    from build.cli import make_parser

    sub = next(a for a in make_parser()._actions if a.dest == "command")
    assert set(sub.choices) <= {c.argv[0] for c in CASES if c.argv}
    assert all(c.error.__module__ == errors.__name__ for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path):
    write_files(case.files, tmp_path)
    before = snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("MKE_CACHE_DIR", "MKE_MIRROR")}
    r = subprocess.run([sys.executable, "-m", "build.cli", *(sub(a, tmp_path) for a in case.argv)], cwd=REPO,
                       capture_output=True, text=True, timeout=TIMEOUT, check=False,
                       env={**env, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    assert_one_line(r.stderr, "error: ", sub(case.fragment, tmp_path))
    assert r.returncode == case.error.exit_code, f"exit {r.returncode}, not {case.error.__name__}'s: {r.stderr}"
    assert snapshot(tmp_path) == before, "the command wrote under " + str(tmp_path)
