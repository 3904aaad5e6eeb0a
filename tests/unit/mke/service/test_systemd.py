"""mke/service/systemd.py: the unit's content, and ExecStart= words that systemd reads back as given.

No systemd runs here, so a unit is checked by content: ``exec_start_argv`` (tests/support/
initsystems.py) reads ``ExecStart=`` as systemd.service(5) says systemd does, and, where
``systemd-analyze`` is installed, ``systemd-analyze verify`` parses the unit file itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mke.service.base import ServiceSpec, read_record
from mke.service.systemd import Systemd, quote
from tests.support.initsystems import exec_start_argv

TRICKY = ["plain", "a b", "100%", "%n", "$HOME", "${HOME}", "$$", 'say "hi"', "back\\slash", "it's", ";", "\\;", "",
          "tab\there", "new\nline", "ünïcödé", "--flag=a b", "-dash", "@at", "end\\", "~", "#not-a-comment", "a\x7fb"]


def spec(command: list[str], **kw) -> ServiceSpec:
    return ServiceSpec(role=kw.pop("role", "worker"), command=tuple(command), data_dir=kw.pop("data_dir", Path("/d")),
                       **kw)


@pytest.mark.parametrize("word", TRICKY, ids=repr)
def test_a_word_reads_back_as_itself(word):
    assert exec_start_argv(f"ExecStart=/bin/mke {quote(word)}") == ["/bin/mke", word]


def test_the_unit(tmp_path):
    exe = "/opt/mke dir/mke"
    text = Systemd(tmp_path).render(spec([exe, "worker", *TRICKY], token_file=Path("/d/worker-token")))
    assert exec_start_argv(text) == [exe, "worker", *TRICKY]
    for line in ("Type=notify", "NotifyAccess=main", "KillMode=process", "Delegate=yes", "Restart=always",
                 "TimeoutStartSec=0", "WantedBy=multi-user.target", "Description=mke worker (Kubernetes node)"):
        assert f"\n{line}\n" in text
    assert text.startswith("# Written by mke install worker;")
    assert "# mke-data-dir: /d\n# mke-token-file: /d/worker-token\n" in text
    assert Systemd.file_mode == 0o600  # CIS 4.1.1
    assert Systemd(tmp_path).service_file("worker") == tmp_path / "etc/systemd/system/mke-worker.service"


def test_the_header_records_what_install_wrote(tmp_path):
    f = tmp_path / "mke-worker.service"
    f.write_text(Systemd(tmp_path).render(spec(["/bin/mke", "worker"], token_file=Path("/d/worker-token"))))
    r = read_record(f, "worker")
    assert r is not None and r.data_dir == Path("/d") and r.token_file == Path("/d/worker-token")
    assert read_record(f, "controller") is None  # another role's header
    f.write_text("[Unit]\nDescription=my own mke\n")
    assert read_record(f, "worker") is None  # not mke install's
    f.write_text("# Written by mke install worker; ...\n# mke-data-dir: /d\n# mke-token-file: /etc/shadow\n")
    r = read_record(f, "worker")
    assert r is not None and r.token_file is None  # not a token file mke install writes: never removed


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_accepts_the_unit(tmp_path):
    """systemd's own parser: no "Unbalanced quoting", no unknown setting, the executable found."""
    unit = tmp_path / "mke-worker.service"
    unit.write_text(Systemd(tmp_path).render(spec([sys.executable, "worker", *TRICKY])))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert str(unit) not in r.stderr, r.stderr  # a warning about a line of it
    # and it does see a bad one: the same unit with one quote too many
    exe = quote(sys.executable)
    unit.write_text(unit.read_text().replace(f"ExecStart={exe} worker ", f'ExecStart={exe} "worker '))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode != 0 and "Unbalanced quoting" in r.stderr, r.stderr
