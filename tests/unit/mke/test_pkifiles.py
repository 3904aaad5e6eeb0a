"""mke/pkifiles.py: mke server's PKI work runs in real `mke _pki` helper processes, so that
cryptography never becomes resident in the long-running server (issue 18)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mke.errors import PKIError
from mke.pki import ClusterPKI, PKIRequest, csr_facts
from mke.pkifiles import PKIFiles
from mke.pkifiles import csr_facts as helper_csr_facts
from tests.unit.mke.components.test_csr_approver import csr

REPO = Path(__file__).resolve().parents[3]
REQ = PKIRequest(node_name="ctl-1", api_address="192.0.2.10", host_addresses=("192.0.2.10", "2001:db8::10"),
                 extra_sans=("api.example.com",))
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _python(code: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO,
                          input=stdin, timeout=120)


def test_the_servers_and_workers_modules_do_not_load_cryptography() -> None:
    """What mke server and mke worker import (components, joins, tokens, backups, kubelet) leaves
    cryptography out."""
    res = _python("import sys\n"
                  "import mke.controller, mke.components.mke_api, mke.components.csr_approver\n"
                  "import mke.components.addons, mke.backup, mke.wal_backup, mke.join, mke.tokens, mke.storage\n"
                  "import mke.commands.server, mke.storage.etcd, mke.storage.kine\n"
                  "import mke.commands.worker, mke.worker.node, mke.worker.kubelet, mke.worker.join\n"
                  "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_ensure_runs_in_a_helper_and_makes_what_cluster_pki_makes(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    res = _python("import json, sys\n"
                  "from mke.pkifiles import PKIFiles, PKIRequest\n"
                  f"rep = PKIFiles({str(pki_dir)!r}).ensure(PKIRequest(**json.loads(sys.stdin.read())))\n"
                  "assert 'cryptography' not in sys.modules\n"
                  "print(json.dumps(rep.created))",
                  stdin=json.dumps({k: list(v) if isinstance(v, tuple) else v
                                    for k, v in dataclasses.asdict(REQ).items()}))
    assert res.returncode == 0, res.stderr
    created = json.loads(res.stdout)
    assert "apiserver" in created and "ca" in created
    assert stat.S_IMODE(pki_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(pki_dir.joinpath("ca.key").stat().st_mode) == 0o600
    # the same request in this process finds everything in place: nothing created or renewed
    again = ClusterPKI(pki_dir).ensure(REQ)
    assert again.created == [] and again.renewed == [] and "apiserver" in again.kept
    assert PKIFiles(pki_dir).ca_pin() == ClusterPKI(pki_dir).ca_pin()


def test_the_helpers_error_is_the_error(tmp_path: Path) -> None:
    joined = dataclasses.replace(REQ, create_shared=False)
    with pytest.raises(PKIError) as here:
        ClusterPKI(tmp_path / "a").ensure(joined)
    with pytest.raises(PKIError) as helper:
        PKIFiles(tmp_path / "b").ensure(joined)
    assert str(helper.value) == str(here.value).replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert "missing on a controller that joined another" in str(helper.value)


def test_csr_facts_from_the_helper_are_the_in_process_ones() -> None:
    requests = [csr()["spec"]["request"], csr(cn="system:node:w2", ips=(), dns=("w2", "w2.example"))["spec"]["request"],
                "bm90IGEgQ1NS", "%%%"]
    here = [csr_facts(r) for r in requests]
    assert helper_csr_facts(requests) == here
    assert here[0]["cn"] == ["system:node:w1"] and here[0]["ips"] == ["192.0.2.21"] and here[0]["dns"] == ["w1"]
    assert all(isinstance(f, str) and f.startswith("unparsable request") for f in here[2:])
    assert helper_csr_facts([]) == []


@pytest.mark.parametrize(("argv", "stdin", "why"), [
    (["nonsense"], "{}", "mke _pki: ensure or csr-facts"),
    (["ensure"], "not json", "mke _pki ensure: bad request on stdin"),
    (["ensure"], '{"dir": "/nonexistent", "request": {"no_such_field": 1}}', "bad request on stdin"),
    (["csr-facts"], '{"requests": 5}', "mke _pki csr-facts: bad request on stdin"),
])
def test_bad_helper_input_is_one_line(argv: list[str], stdin: str, why: str) -> None:
    res = subprocess.run([sys.executable, "-m", "mke", "_pki", *argv], capture_output=True, text=True, env=ENV,
                         input=stdin, timeout=60)
    assert res.returncode != 0
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("mke: error: ") and why in res.stderr
    assert res.stdout == ""


def test_a_started_ensure_runs_beside_the_caller_and_an_abandoned_one_leaves_a_whole_pki(tmp_path: Path) -> None:
    """mke server starts the helper, then checks versions and finds binaries; when that fails, the
    helper is let finish (every file by temp + rename under the pki lock), its answer dropped."""
    started = PKIFiles(tmp_path / "a").start_ensure(REQ)
    rep = started.result()
    assert "apiserver" in rep.created and started.proc.returncode == 0
    abandoned = PKIFiles(tmp_path / "b").start_ensure(REQ)
    abandoned.abandon()
    assert abandoned.proc.returncode == 0
    again = ClusterPKI(tmp_path / "b").ensure(REQ)
    assert again.created == [] and again.renewed == []
    assert sorted(p.name for p in (tmp_path / "b").rglob("*") if p.is_file()) == \
        sorted(p.name for p in (tmp_path / "a").rglob("*") if p.is_file())


def test_dist_mkes_helper_is_the_file_it_started_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """From dist/mke the helper runs the executable through the entry's open fd of it, so an upgrade
    that replaced dist/mke's path meanwhile does not answer for the running version."""
    from mke import start
    from mke.pkifiles import helper_command

    monkeypatch.setattr(start, "executable", "/usr/local/bin/mke")
    monkeypatch.setattr(start, "payload_path", "/proc/self/fd/7")
    assert helper_command()[0] == [f"/proc/{os.getpid()}/fd/7"]
    monkeypatch.setattr(start, "payload_path", "/usr/local/bin/mke")  # the entry gave no fd
    assert helper_command()[0] == ["/usr/local/bin/mke"]
    monkeypatch.setattr(start, "executable", None)  # from source
    cmd, env = helper_command()
    assert cmd == [os.path.abspath(sys.executable), "-m", "mke"] and env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
