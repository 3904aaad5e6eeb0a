"""mke/service/openrc.py: the openrc-run script's content, and arguments that reach mke as given.

No OpenRC runs here: ``openrc_argv`` (tests/support/initsystems.py) sources the script in a
real ``sh`` and runs the ``eval`` that openrc-run's supervise-daemon.sh runs on
``$command -- $command_args``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mke.errors import UsageError
from mke.service.base import ServiceSpec, read_record
from mke.service.openrc import OpenRC
from tests.support.initsystems import openrc_argv

TRICKY = ["plain", "a b", "100%", "$HOME", "${HOME}", "`id`", "$(id)", 'say "hi"', "back\\slash", "it's", "'", ";",
          "a;b", "&", "|", ">x", "<y", "", " lead", "trail ", "ünïcödé", "--flag=a b", "-dash", "*", "~", "#hash",
          "a*b?[c]"]


def spec(command: list[str], **kw) -> ServiceSpec:
    return ServiceSpec(role=kw.pop("role", "worker"), command=tuple(command), data_dir=Path("/d"), **kw)


def test_the_script_gives_mke_every_argument_as_it_was(tmp_path):
    rc = OpenRC(tmp_path)
    s = spec(["/usr/local/bin/mke", "worker", *TRICKY], token_file=Path("/d/worker-token"))
    rc.check(s)
    script = tmp_path / "mke-worker"
    script.write_text(rc.render(s))
    assert openrc_argv(script) == ["/usr/local/bin/mke", "--", "worker", *TRICKY]


def test_the_script(tmp_path):
    text = OpenRC(tmp_path).render(spec(["/usr/local/bin/mke", "server", "--enable-worker"], role="controller"))
    assert text.startswith("#!/sbin/openrc-run\n# Written by mke install controller;")
    assert "# mke-data-dir: /d\n" in text and "mke-token-file" not in text
    for line in ("supervisor=supervise-daemon", "command=/usr/local/bin/mke", "command_args='server --enable-worker'",
                 "output_log=/var/log/mke-controller.log", "error_log=/var/log/mke-controller.log",
                 "respawn_delay=5", "respawn_max=0", "retry=TERM/60/KILL/5", "\twant cgroups"):
        assert f"\n{line}\n" in text, line
    assert OpenRC.file_mode == 0o700
    assert OpenRC(tmp_path).service_file("controller") == tmp_path / "etc/init.d/mke-controller"
    f = tmp_path / "mke-controller"
    f.write_text(text)
    assert read_record(f, "controller") is not None


@pytest.mark.parametrize("arg", ["two  spaces", "tab\there", "new\nline", "bell\a"])
def test_what_the_shell_would_change_is_refused(arg, tmp_path):
    with pytest.raises(UsageError, match="OpenRC passes arguments through its shell"):
        OpenRC(tmp_path).check(spec(["/usr/local/bin/mke", "worker", f"--cgroup-root={arg}"]))


@pytest.mark.parametrize("exe", ["/opt/my mke/mke", "/opt/$x/mke", "relative/mke", "/opt/m'ke"])
def test_an_executable_path_the_script_cannot_hold_is_refused(exe, tmp_path):
    with pytest.raises(UsageError, match="put mke in /usr/local/bin"):
        OpenRC(tmp_path).check(spec([exe, "worker"]))
