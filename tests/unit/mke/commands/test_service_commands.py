"""mke install, start, stop and uninstall (mke/commands/{install,start,stop,uninstall}.py).

No service manager runs here: each test makes a directory that stands for ``/``
(``$MKE_INIT_ROOT``) with systemd's or OpenRC's marks, and puts fake ``systemctl``,
``rc-service`` and ``rc-update`` first on ``PATH`` that only record their argv
(tests/support/initsystems.py). The unit and the script are checked by content: their
command read back as systemd and openrc-run read it. The commands run in-process
(``mke.cli.main``), as root.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
from pathlib import Path

import pytest

from mke import cli
from mke.commands import install
from mke.errors import ServiceError, UsageError
from mke.service import NEITHER
from tests.support.initsystems import Host, exec_start_argv, openrc_argv
from tests.support.jointokens import tokens

MKE = [os.path.abspath(sys.executable), "-m", "mke"]  # what the unit runs when mke runs from source


@pytest.fixture(scope="module")
def toks() -> dict[str, str]:
    return tokens()


@pytest.fixture
def run(monkeypatch, capsys):
    """``run(host, *argv)``: mke in-process as root on ``host``: (exit code, stdout, stderr)."""

    def go(host: Host | None, *argv: str) -> tuple[int, str, str]:
        for k, v in (host.env() if host else {}).items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("MKE_TOKEN", raising=False)
        monkeypatch.setattr(os, "geteuid", lambda: 0)
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return go


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def unit_of(host: Host, role: str) -> Path:
    return host.root / f"etc/systemd/system/mke-{role}.service"


# --------------------------------------------------------------------------- install: the flags


def test_install_controller_carries_every_flag_given(tmp_path, run, toks, monkeypatch):
    host = Host.make(tmp_path, "systemd")
    conf = tmp_path / "conf dir 100% $HOME" / "mke.yaml"
    conf.parent.mkdir()
    conf.write_text("api:\n  port: 6443\n")
    token_file = tmp_path / "ctl token"
    token_file.write_text(toks["controller"] + "\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(host, "install", "controller", "--token-file", str(token_file), "-c", str(conf),
                         "--data-dir", "data dir", "--bin-dir", "bin", "--enable-worker", "--no-taints",
                         "--name", "CTL-1", "--ignore-sysinfo", "--no-manifests")
    assert code == 0, err
    unit = unit_of(host, "controller")
    text = unit.read_text()
    assert exec_start_argv(text) == [*MKE, "server", f"--token-file={token_file}", f"--config={conf}",
                                     f"--data-dir={tmp_path / 'data dir'}", f"--bin-dir={tmp_path / 'bin'}",
                                     "--enable-worker", "--no-taints", "--name=ctl-1", "--ignore-sysinfo",
                                     "--no-manifests"]
    assert mode(unit) == 0o600  # CIS 4.1.1
    assert toks["controller"] not in text and "mke-token-file" not in text  # your own token file: yours
    assert host.calls() == ["systemctl daemon-reload", "systemctl enable mke-controller.service"]
    assert "installed mke-controller (systemd)" in out and "mke start controller" in out


def test_install_worker_keeps_the_token_off_the_command_line(tmp_path, run, toks, monkeypatch):
    host = Host.make(tmp_path, "systemd")
    registries = tmp_path / "registries.yaml"
    registries.write_text("mirrors:\n  registry.k8s.io:\n    endpoints: [http://10.0.0.1:5000]\n")
    data = tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    code, out, err = run(host, "install", "worker", toks["worker"], "--data-dir", str(data), "--name", "w1",
                         "--label", "a=b", "--label", "tier=edge", "--taint", "dedicated=gpu:NoSchedule",
                         "--cgroup-root", "/pods 100% $x", "--pod-logs-dir", "logs", "--registries", "registries.yaml",
                         "--kubelet-arg=--v=2", "--kubelet-arg", "eviction-hard=memory.available<100Mi")
    assert code == 0, err
    text = unit_of(host, "worker").read_text()
    assert toks["worker"] not in text
    token_file = data / "worker-token"
    assert exec_start_argv(text) == [*MKE, "worker", f"--token-file={token_file}", f"--data-dir={data}", "--name=w1",
                                     "--label=a=b", "--label=tier=edge", "--taint=dedicated=gpu:NoSchedule",
                                     "--cgroup-root=/pods 100% $x", f"--pod-logs-dir={tmp_path / 'logs'}",
                                     f"--registries={registries}", "--kubelet-arg=--v=2",
                                     "--kubelet-arg=eviction-hard=memory.available<100Mi"]
    assert token_file.read_text() == toks["worker"] + "\n" and mode(token_file) == 0o600 and mode(data) == 0o700
    assert f"# mke-token-file: {token_file}\n" in text and f"# mke-data-dir: {data}\n" in text
    assert f"the join token is in {token_file} (0600)" in out


def test_install_worker_takes_the_token_from_the_environment(tmp_path, run, toks, monkeypatch):
    host = Host.make(tmp_path, "systemd")
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MKE_TOKEN", toks["worker"])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cli.main(["install", "worker", "--data-dir", str(tmp_path / "d")]) == 0
    assert "MKE_TOKEN" not in os.environ
    text = unit_of(host, "worker").read_text()
    assert toks["worker"] not in text and f"--token-file={tmp_path / 'd' / 'worker-token'}" in exec_start_argv(text)


ROLES = [("controller", "server"), ("worker", "worker")]


def given_value(a, tmp: Path) -> str:
    if a.choices:
        return str(next(iter(a.choices)))
    if a.type is Path:
        return str(tmp / f"a dir 100% $X {a.dest}")
    if a.type in (None, str):
        return f"v {a.dest} 100% $X"
    from mke.commands import log_files, log_size

    if a.type is log_size:
        return str(20 << 20)  # in bytes, as install writes a parsed size; not the default (only what differs is passed)
    if a.type is log_files:
        return "3"
    pytest.fail(f"{a.option_strings}: teach this test a value of {a.type}")


@pytest.mark.parametrize("role,command", ROLES)
def test_every_flag_of_the_command_is_installable(role, command, tmp_path):
    """One source of truth: install's role parser is the command's own, and every flag of the
    command, given to install, reaches the service's command line and parses back the same."""
    own = install.RoleParser()
    own.recording = True
    importlib.import_module(f"mke.commands.{command}").add_arguments(own)  # what `mke <command>` is made of
    actions = cli.make_parser("install").parse_args(["install", role]).service_actions
    assert [(a.dest, a.option_strings) for a in actions] == [(a.dest, a.option_strings) for a in own.service_actions]

    given = []
    for a in actions:
        if not a.option_strings:
            continue
        flag = next(o for o in a.option_strings if o.startswith("--"))
        given += [flag] if a.nargs == 0 else [f"{flag}={given_value(a, tmp_path)}"]
    ns = cli.make_parser("install").parse_args(["install", role, "some-token", *given])
    flags = install.service_flags(ns.service_actions, ns)
    assert flags == given  # every one, in the command's order; the token left out
    back = cli.make_parser(command).parse_args([command, *flags])
    for a in actions:
        if a.dest != "token":
            assert getattr(back, a.dest) == getattr(ns, a.dest), a.dest
    assert back.token is None


def test_install_refuses_a_second_service_unless_forced(tmp_path, run, toks):
    host = Host.make(tmp_path, "systemd")
    tf = tmp_path / "t"
    tf.write_text(toks["worker"])
    assert run(host, "install", "worker", "--token-file", str(tf))[0] == 0
    code, _, err = run(host, "install", "worker", "--token-file", str(tf), "--name", "other")
    assert code == UsageError.exit_code and "mke-worker is already installed" in err and "--force" in err
    code, _, err = run(host, "install", "controller")
    assert code == UsageError.exit_code and "mke-worker is already installed" in err and "--enable-worker" in err
    assert "--name=other" not in unit_of(host, "worker").read_text()
    code, out, err = run(host, "install", "worker", "--token-file", str(tf), "--name", "other", "--force")
    assert code == 0 and "replaced the one installed before" in out
    assert "--name=other" in exec_start_argv(unit_of(host, "worker").read_text())
    assert run(host, "install", "controller", "--force")[0] == 0 and unit_of(host, "controller").exists()


def test_a_forced_install_removes_the_token_file_the_replaced_service_had(tmp_path, run, toks):
    host = Host.make(tmp_path, "systemd")
    assert run(host, "install", "worker", toks["worker"], "--data-dir", str(tmp_path / "old"))[0] == 0
    assert run(host, "install", "worker", toks["worker"], "--data-dir", str(tmp_path / "new"), "--force")[0] == 0
    assert not (tmp_path / "old/worker-token").exists() and (tmp_path / "new/worker-token").exists()
    # the same token file named as your own: kept (the new service reads it)
    assert run(host, "install", "worker", "--token-file", str(tmp_path / "new/worker-token"), "--data-dir",
               str(tmp_path / "new"), "--force")[0] == 0
    assert (tmp_path / "new/worker-token").exists()


def test_install_checks_its_input_before_it_writes(tmp_path, run, toks):
    host = Host.make(tmp_path, "systemd")
    for argv, fragment in [(["worker"], "needs a join token"), (["worker", toks["controller"]], "controller token"),
                           (["worker", "--token-file", str(tmp_path / "nope")], "--token-file"),
                           (["worker", toks["worker"], "--taint", "nope"], "--taint 'nope'"),
                           (["controller", "--name", "Bad_Name!"], "--name")]:
        code, _, err = run(host, "install", *argv)
        assert code != 0 and fragment in err, (argv, err)
    assert not (host.root / "etc").exists() and host.calls() == []


# --------------------------------------------------------------------------- install: OpenRC


def test_install_on_openrc_writes_an_init_script(tmp_path, run, toks):
    host = Host.make(tmp_path, "openrc")
    data = tmp_path / "data"
    code, out, err = run(host, "install", "worker", toks["worker"], "--data-dir", str(data), "--label", "a=b",
                         "--cgroup-root", "/pods 100% $x`id`")
    assert code == 0, err
    script = host.root / "etc/init.d/mke-worker"
    assert mode(script) == 0o700 and toks["worker"] not in script.read_text()
    assert openrc_argv(script) == [MKE[0], "--", *MKE[1:], "worker", f"--token-file={data / 'worker-token'}",
                                   f"--data-dir={data}", "--label=a=b", "--cgroup-root=/pods 100% $x`id`"]
    assert host.calls() == ["rc-update add mke-worker default"]
    assert "installed mke-worker (OpenRC)" in out


def test_openrc_refuses_what_its_shell_would_change(tmp_path, run, toks):
    host = Host.make(tmp_path, "openrc")
    code, _, err = run(host, "install", "worker", toks["worker"], "--data-dir", str(tmp_path / "d"),
                       "--cgroup-root", "two  spaces")
    assert code == UsageError.exit_code and "two spaces" in err
    assert not (tmp_path / "d").exists() and not (host.root / "etc/init.d").exists()


# --------------------------------------------------------------------------- start, stop, uninstall


def test_start_stop_uninstall_with_systemd(tmp_path, run, toks):
    host = Host.make(tmp_path, "systemd")
    data = tmp_path / "data"
    assert run(host, "install", "worker", toks["worker"], "--data-dir", str(data))[0] == 0
    (data / "pki").mkdir()  # the node's state: uninstall leaves it
    code, out, _ = run(host, "start")
    assert code == 0 and "mke-worker started and ready" in out
    code, out, _ = run(host, "stop", "worker")
    assert code == 0 and "stopped mke-worker" in out
    code, out, err = run(host, "uninstall")
    assert code == 0, err
    assert host.calls() == ["systemctl daemon-reload", "systemctl enable mke-worker.service",
                            "systemctl start mke-worker.service", "systemctl stop mke-worker.service",
                            "systemctl stop mke-worker.service", "systemctl disable mke-worker.service",
                            "systemctl daemon-reload"]
    assert not unit_of(host, "worker").exists() and not (data / "worker-token").exists()
    assert sorted(p.name for p in data.iterdir()) == ["pki"]
    assert f"`mke reset --data-dir {data}` removes it" in out
    code, _, err = run(host, "start")
    assert code == ServiceError.exit_code and "no mke service is installed" in err


def test_start_stop_uninstall_with_openrc(tmp_path, run, toks):
    host = Host.make(tmp_path, "openrc")
    assert run(host, "install", "controller", "--data-dir", str(tmp_path / "d"))[0] == 0
    (host.root / "etc/runlevels/default/mke-controller").symlink_to("/etc/init.d/mke-controller")  # rc-update add's
    code, out, _ = run(host, "start")
    assert code == 0 and "does not wait until it is ready" in out
    assert run(host, "stop")[0] == 0
    assert run(host, "uninstall", "controller")[0] == 0
    assert host.calls() == ["rc-update add mke-controller default", "rc-service mke-controller start",
                            "rc-service mke-controller stop", "rc-service mke-controller stop",
                            "rc-update del mke-controller default"]
    assert not (host.root / "etc/init.d/mke-controller").exists()


def test_uninstall_removes_only_what_install_wrote(tmp_path, run, toks):
    host = Host.make(tmp_path, "systemd")
    own = tmp_path / "my-token"
    own.write_text(toks["worker"])
    assert run(host, "install", "worker", "--token-file", str(own), "--data-dir", str(tmp_path / "d"))[0] == 0
    assert run(host, "uninstall")[0] == 0
    assert own.exists()  # yours: install did not write it
    # a unit mke install did not write is left alone
    unit = unit_of(host, "controller")
    unit.write_text("[Service]\nExecStart=/usr/local/bin/mke server\n")
    code, _, err = run(host, "uninstall")
    assert code == ServiceError.exit_code and "was not written by mke install" in err and unit.exists()


def test_a_role_is_needed_when_both_are_installed(tmp_path, run, toks):
    host = Host.make(tmp_path, "systemd")
    assert run(host, "install", "controller")[0] == 0
    assert run(host, "install", "worker", toks["worker"], "--data-dir", str(tmp_path / "w"), "--force")[0] == 0
    code, _, err = run(host, "stop")
    assert code == UsageError.exit_code and "name one" in err
    assert run(host, "stop", "controller")[0] == 0
    assert host.calls()[-1] == "systemctl stop mke-controller.service"


@pytest.mark.parametrize("argv", [["install", "controller"], ["start"], ["stop", "worker"], ["uninstall"]])
def test_neither_systemd_nor_openrc_is_one_line(argv, tmp_path, run):
    host = Host.make(tmp_path, None)
    (host.bin / "openrc-run").unlink(missing_ok=True)
    code, out, err = run(host, *argv)
    assert code == ServiceError.exit_code and err == f"mke: error: {NEITHER}\n"
    assert "mke server" in err and "your own supervisor" in err and host.calls() == []


def test_a_tool_that_fails_or_is_missing_is_one_line(tmp_path, run, toks):
    host = Host.make(tmp_path, "systemd")
    assert run(host, "install", "controller")[0] == 0
    host.fake("systemctl", exit_code=1, says="Job for mke-controller.service failed because the control process "
                                             "exited with error code.")
    code, _, err = run(host, "start")
    assert code == ServiceError.exit_code and err.count("\n") == 1
    assert "systemctl start mke-controller.service failed (exit 1): Job for" in err
    assert "journalctl -u mke-controller.service" in err
    (host.bin / "systemctl").unlink()
    for argv in (["stop"], ["uninstall"], ["install", "controller", "--force"]):
        code, _, err = run(host, *argv)
        assert code == ServiceError.exit_code and "systemctl is not on PATH" in err, argv
    assert unit_of(host, "controller").exists()
