"""build/cli.py: one-line errors listing valid choices; the recipes table."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from build.cli import main
from build.download import mirror_url

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("args,code,text", [
    (["build", "--mode=bogus"], 2, "unknown mode 'bogus': choose one of fetch, docker, none"),
    (["build", "--mode=none", "--component=nope"], 2, "unknown component 'nope': choose from cni-plugins, containerd"),
    (["build", "--mode=none", "--arch=s390x"], 2, "unknown arch 's390x': choose one of amd64, arm64"),
    (["build", "--jobs=x"], 2, "argument --jobs: 'x' is not a number of jobs"),
])
def test_usage_errors(args, code, text, capsys, tmp_path):
    assert main([*args, f"--cache-dir={tmp_path}"]) == code
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1


def test_recipes_table(capsys):
    assert main(["recipes"]) == 0
    rows = [line.split()[:3] for line in capsys.readouterr().out.splitlines()]  # column widths vary
    assert ["kubernetes", "1.37.2", "fetch,docker,none"] in rows
    assert ["konnectivity", "0.36.0", "docker,none"] in rows


def test_none_mode_writes_manifest_without_binaries(tmp_path, capsys):
    assert main(["build", "--mode=none", "--no-bundle", f"--cache-dir={tmp_path / 'c'}", f"--dist={tmp_path / 'd'}"]) == 0
    import json

    m = json.loads((tmp_path / "d" / "linux-amd64" / "manifest.json").read_text())
    assert m["mode"] == "none" and all(e["sha256"] is None and e["source"] == "PATH" for e in m["binaries"])
    assert not list((tmp_path / "d" / "linux-amd64" / "bin").iterdir())


def test_component_by_binary_name(tmp_path):
    assert main(["build", "--mode=none", "--component=kubelet", "--no-bundle", f"--cache-dir={tmp_path}", f"--dist={tmp_path / 'd'}"]) == 0


def test_mirror_url():
    assert mirror_url("https://dl.k8s.io/release/v1/bin/x", "http://m:8/base/") == "http://m:8/base/dl.k8s.io/release/v1/bin/x"
    assert mirror_url("https://a/b", None) == "https://a/b"


@pytest.mark.parametrize("dist,reason", [
    ("/etc/passwd", r"/etc/passwd: exists and is not a directory \(--dist /etc/passwd\)"),  # a file where a directory must be
    ("/sys/mke-test", r"/sys/mke-test: (Operation not permitted|Permission denied)"),  # sysfs: no mkdir, even for root
])
def test_os_error_is_one_line_naming_the_path(tmp_path, dist, reason):
    """The real CLI (python -m build.cli): an OSError from the host is one line, exit 17, no traceback."""
    r = subprocess.run([sys.executable, "-m", "build.cli", "build", "--mode=none", "--no-bundle", "--quiet",
                        f"--cache-dir={tmp_path / 'c'}", f"--dist={dist}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 17, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(f"error: {reason}", lines[0]), r.stderr


def test_conformance_recipes_flat_dist_and_layout_choices(tmp_path, capsys):
    import json

    conformance = REPO / "recipes" / "conformance"
    assert main(["build", "--mode=none", f"--recipes-dir={conformance}", "--dist-layout=flat",
                 f"--cache-dir={tmp_path / 'c'}", f"--dist={tmp_path / 'd'}"]) == 0
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())  # flat: no linux-<arch>/ level
    assert {"e2e.test", "ginkgo", "registry", "agnhost"} <= {e["name"] for e in m["binaries"]}
    assert main(["build", "--mode=none", "--airgap-layout=tarball", f"--cache-dir={tmp_path / 'c'}"]) == 2
    assert "invalid choice: 'tarball'" in capsys.readouterr().err
