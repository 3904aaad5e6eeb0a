"""mke completion: the scripts come from mke's own parsers, and the bash one completes in a real bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mke import cli
from mke.commands.completion import mke_model, script

REPO = Path(__file__).resolve().parents[4]
BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict[str, Path]:
    """Each shell's script, as `mke completion SHELL` prints it (the real command line)."""
    d = tmp_path_factory.mktemp("completion")
    out = {}
    for shell in ("bash", "zsh", "fish"):
        r = subprocess.run([sys.executable, "-m", "mke", "completion", shell], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=True)
        assert r.stderr == ""
        out[shell] = d / f"mke.{shell}"
        out[shell].write_text(r.stdout)
    return out


def test_the_model_has_every_command_sub_command_and_flag():
    root = mke_model()
    assert list(root.commands) == list(cli.COMMANDS)
    assert set(root.commands["token"].commands) == {"create", "list", "invalidate"}
    assert set(root.commands["config"].commands) == {"create", "reference", "validate"}
    assert set(root.commands["etcd"].commands) == {"member-list", "leave"}
    assert set(root.commands["airgap"].commands) == {"list-images"}
    server = {n: o for o in root.commands["server"].options for n in o.names}
    assert server["--data-dir"].value == "dir" and server["--config"].value == "file" and server["-c"] is server["--config"]
    assert server["--token-file"].value == "file"
    assert server["--log-level"].value == "choice debug info warn error"
    assert server["--enable-worker"].value == ""  # a switch
    assert "--no-manifests" not in server  # hidden (argparse.SUPPRESS): not offered
    create = {n: o for o in root.commands["token"].commands["create"].options for n in o.names}
    assert sorted(create["--role"].value.split()) == ["choice", "controller", "worker"]
    assert root.commands["kubectl"].args == ["rest"] and root.commands["ctr"].args == ["rest"]
    install = root.commands["install"]  # a role, then the flags of that role's command
    assert set(install.commands) == {"controller", "worker"}
    assert {n for o in install.commands["worker"].options for n in o.names} >= {"--token-file", "--log-level", "--name"}
    assert root.commands["config"].commands["validate"].args == ["file"]


@pytest.mark.skipif(BASH is None, reason="no bash")
def test_the_bash_script_parses(scripts):
    r = subprocess.run([BASH, "-n", str(scripts["bash"])], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def complete(script_path: Path, words: list[str], cwd: Path) -> list[str]:
    """COMPREPLY of ``_mke`` for ``words`` (the last one is being completed), in a real bash."""
    program = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _mke; '
               'printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run([BASH, "-c", program, "bash", str(script_path), *words], capture_output=True, text=True,
                       cwd=cwd, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line]


CASES = [
    (["mke", "tok"], ["token"]),
    (["mke", "c"], ["config", "ctr", "crictl", "completion", "certificate", "cluster"]),
    (["mke", "--debug", "st"], ["start", "status", "stop"]),
    (["mke", "token", ""], ["create", "list", "invalidate"]),
    (["mke", "token", "create", "--r"], ["--reusable", "--role"]),
    (["mke", "token", "create", "--role", ""], ["controller", "worker"]),
    (["mke", "token", "create", "--role", "=", "w"], ["worker"]),  # --role=w (bash splits at =)
    (["mke", "token", "create", "--expiry", "1h", "--d"], ["--description", "--data-dir"]),
    (["mke", "etcd", "leave", "--peer-url", "x", "--data"], ["--data-dir"]),
    (["mke", "config", ""], ["create", "reference", "validate"]),
    (["mke", "server", "--log-level", ""], ["debug", "info", "warn", "error"]),
    (["mke", "worker", "--log-"], ["--log-level", "--log-max-size", "--log-max-files"]),
    (["mke", "install", ""], ["controller", "worker"]),
    (["mke", "install", "controller", ""], []),  # then a token: nothing to offer
    (["mke", "install", "worker", "--log-"], ["--log-level", "--log-max-size", "--log-max-files"]),
    (["mke", "certificate", "rotate", "--service", "kube-s"], ["kube-scheduler"]),
    (["mke", "kubeconfig", ""], ["admin"]),
    (["mke", "completion", ""], ["bash", "zsh", "fish"]),
    (["mke", "server", "--name", ""], []),  # a value of its own
    (["mke", "kubectl", "get", ""], []),  # kubectl's arguments: the shell's default (files)
    (["mke", "ctr", "--", ""], []),
    (["mke", "crictl", "--d"], ["--data-dir"]),
]


@pytest.mark.skipif(BASH is None, reason="no bash")
@pytest.mark.parametrize("words,expected", CASES, ids=[" ".join(w) or "-" for w, _ in CASES])
def test_bash_completes(scripts, tmp_path, words, expected):
    assert sorted(complete(scripts["bash"], words, tmp_path)) == sorted(expected)


@pytest.mark.skipif(BASH is None, reason="no bash")
def test_bash_completes_files_and_directories_for_path_flags(scripts, tmp_path):
    (tmp_path / "mke.yaml").write_text("")
    (tmp_path / "mke-data").mkdir()
    assert sorted(complete(scripts["bash"], ["mke", "server", "--config", "mke"], tmp_path)) == ["mke-data", "mke.yaml"]
    assert complete(scripts["bash"], ["mke", "server", "--data-dir", "mke"], tmp_path) == ["mke-data"]
    assert complete(scripts["bash"], ["mke", "config", "validate", "mke."], tmp_path) == ["mke.yaml"]
    assert complete(scripts["bash"], ["mke", "worker", "--pod-logs-dir", "mke"], tmp_path) == ["mke-data"]


def test_every_script_names_every_command_and_flag(scripts):
    root = mke_model()
    names = {w for n in root.walk() for w in n.commands} | {x for n in root.walk() for o in n.options for x in o.names}
    for shell, path in scripts.items():
        text = path.read_text()
        fish = shell == "fish"
        for name in names:
            spelled = f"'{name.lstrip('-')}'" if fish and name.startswith("-") else name
            assert spelled in text, f"{shell}: {name} missing"
        for node in root.walk():
            if node.words:
                assert f"'{node.path}" in text, f"{shell}: {node.path!r} missing"


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_the_other_shells_parse_where_they_exist(scripts, shell):
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"no {shell} here")
    r = subprocess.run([exe, "-n", str(scripts[shell])], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_the_scripts_are_made_once_and_describe_this_mke():
    from mke import __version__

    for shell in ("bash", "zsh", "fish"):
        text = script(shell)
        assert f"mke {__version__}" in text.splitlines()[0] + text.splitlines()[1]
        assert "python" not in text.lower()  # completing never runs mke


FISH_CASES = [
    ("mke tok", ["token"]),
    ("mke token create --r", ["--reusable", "--role"]),
    ("mke token create --role ", ["controller", "worker"]),
    ("mke certificate rotate --service kube-s", ["kube-scheduler"]),
    ("mke install worker --log-", ["--log-level", "--log-max-size", "--log-max-files"]),
    ("mke completion ", ["bash", "fish", "zsh"]),
]


@pytest.mark.parametrize("line,expected", FISH_CASES, ids=[c[0] for c in FISH_CASES])
def test_fish_completes(scripts, line, expected):
    """fish's own ``complete -C`` asks the script what it offers for a command line."""
    exe = shutil.which("fish")
    if exe is None:
        pytest.skip("no fish here (scripts/bootstrap.sh installs it)")
    r = subprocess.run([exe, "-c", f"source {scripts['fish']}; complete -C '{line}'"], capture_output=True,
                       text=True, timeout=30, check=True)
    assert sorted(x.split("\t")[0] for x in r.stdout.splitlines()) == sorted(expected)
