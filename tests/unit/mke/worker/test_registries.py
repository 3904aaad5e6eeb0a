"""Registry mirrors and registry TLS: the registries schema (mke/config.py: mke.yaml's section and
``mke worker --registries FILE``), the hosts.toml files (mke/worker/registries.py), what
containerd's config says, and the hosts dir that only ever loses what mke wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from mke import cli
from mke.commands import install
from mke.config import load_registries, parse_config, parse_registries
from mke.errors import ConfigError, UsageError
from mke.worker.containerd import Containerd, containerd_config
from mke.worker.registries import HostsDir, hosts_files
from tests.support.initsystems import Host
from tests.support.jointokens import tokens
from tests.unit.mke.worker.test_config import make_ctx

REPO = Path(__file__).resolve().parents[4]
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "ca.pem").write_text(CA)
    (tmp_path / "client.pem").write_text(CA)
    (tmp_path / "client.key").write_text(KEY)
    (tmp_path / "empty.pem").write_text("")
    (tmp_path / "unreadable.pem").write_text(CA)
    (tmp_path / "unreadable.pem").chmod(0)
    return {n: str(tmp_path / n) for n in ("ca.pem", "client.pem", "client.key", "empty.pem", "unreadable.pem")}


def test_the_proposed_example_parses(pem):
    r = parse_registries({
        "mirrors": {"registry.k8s.io": {"endpoints": ["http://10.0.0.1:5000"]},
                    "docker.io": {"endpoints": ["mirror.internal/"]}},
        "configs": {"mirror.internal": {"caFile": pem["ca.pem"], "insecureSkipVerify": False}},
    }, "registries.yaml")
    assert r.mirrors["registry.k8s.io"].endpoints == ("http://10.0.0.1:5000",)
    assert r.mirrors["docker.io"].endpoints == ("https://mirror.internal",)  # https by default, no trailing /
    assert r.configs["mirror.internal"].ca_file == pem["ca.pem"]


# (the document, the field the one-line error names, a word of the reason)
BAD = [
    ({"mirror": {}}, "mirror:", "did you mean 'mirrors'"),
    ({"registries": {"mirrors": {}}}, "registries:", "at the top level"),
    ({"mirrors": []}, "mirrors:", "expected a mapping"),
    ({"mirrors": {"Docker.io": {"endpoints": ["x.io"]}}}, "mirrors[Docker.io]:", "lowercase"),
    ({"mirrors": {"https://docker.io": {"endpoints": ["x.io"]}}}, "mirrors[https://docker.io]:", "not a URL"),
    ({"mirrors": {"bad_name": {"endpoints": ["x.io"]}}}, "mirrors[bad_name]:", "not a registry name"),
    ({"mirrors": {"r.io:99999": {"endpoints": ["x.io"]}}}, "mirrors[r.io:99999]:", "not a registry name"),
    ({"mirrors": {"r.io": {}}}, "mirrors[r.io]:", "needs endpoints"),
    ({"mirrors": {"r.io": {"endpoint": ["x.io"]}}}, "mirrors[r.io].endpoint:", "did you mean 'endpoints'"),
    ({"mirrors": {"r.io": {"endpoints": []}}}, "mirrors[r.io].endpoints:", "expected a list"),
    ({"mirrors": {"r.io": {"endpoints": ["ftp://x.io"]}}}, "mirrors[r.io].endpoints[0]:", "scheme"),
    ({"mirrors": {"r.io": {"endpoints": ["https://u:p@x.io"]}}}, "mirrors[r.io].endpoints[0]:", "credentials"),
    ({"mirrors": {"r.io": {"endpoints": ["https://x.io/?a=b"]}}}, "mirrors[r.io].endpoints[0]:", "no query"),
    ({"mirrors": {"r.io": {"endpoints": ["https://x.io:http"]}}}, "mirrors[r.io].endpoints[0]:", "port"),
    ({"mirrors": {"r.io": {"endpoints": ["https://"]}}}, "mirrors[r.io].endpoints[0]:", "not an endpoint URL"),
    ({"mirrors": {"r.io": {"endpoints": ["https://x_y.io"]}}}, "mirrors[r.io].endpoints[0]:", "DNS name"),
    ({"mirrors": {"r.io": {"endpoints": ["x.io", "https://x.io/"]}}}, "mirrors[r.io].endpoints[1]:", "twice"),
    ({"mirrors": {"r.io": {"endpoints": [5000]}}}, "mirrors[r.io].endpoints[0]:", "expected a string"),
    ({"mirrors": {"r.io": {"endpoints": ["x.io"], "rewrite": {}}}}, "mirrors[r.io].rewrite:", "not supported"),
    ({"configs": {"*": {}}}, "configs[*]:", "not a registry name"),
    ({"configs": {"r.io": {"auth": {"username": "u", "password": "p"}}}}, "configs[r.io].auth:",
     "imagePullSecret"),
    ({"configs": {"r.io": {"tls": {"ca_file": "/x"}}}}, "configs[r.io].tls:", "caFile"),
    ({"configs": {"r.io": {"caFile": "ca.pem"}}}, "configs[r.io].caFile:", "absolute path"),
    ({"configs": {"r.io": {"caFile": "/nonexistent/ca.pem"}}}, "configs[r.io].caFile:", "No such file"),
    ({"configs": {"r.io": {"caFile": "{tmp}"}}}, "configs[r.io].caFile:", "is a directory"),
    ({"configs": {"r.io": {"caFile": "{empty.pem}"}}}, "configs[r.io].caFile:", "not a PEM certificate"),
    ({"configs": {"r.io": {"caFile": "{client.key}"}}}, "configs[r.io].caFile:", "not a PEM certificate"),
    ({"configs": {"r.io": {"keyFile": "{ca.pem}", "certFile": "{client.pem}"}}}, "configs[r.io].keyFile:",
     "not a PEM private key"),
    ({"configs": {"r.io": {"certFile": "{client.pem}"}}}, "configs[r.io].keyFile:", "needs both"),
    ({"configs": {"r.io": {"insecureSkipVerify": "yes"}}}, "configs[r.io].insecureSkipVerify:", "true or false"),
    ({"configs": {"r.io": {"insecure": True}}}, "configs[r.io].insecure:", "did you mean 'insecureSkipVerify'"),
]


def _fill(doc, names: dict[str, str]):
    if isinstance(doc, dict):
        return {k: _fill(v, names) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_fill(v, names) for v in doc]
    if isinstance(doc, str) and doc.startswith("{") and doc.endswith("}"):
        return names[doc[1:-1]]
    return doc


@pytest.mark.parametrize(("doc", "field", "reason"), BAD, ids=[b[1] + b[2] for b in BAD])
def test_bad_registries_are_one_line_naming_file_and_field(doc, field, reason, pem, tmp_path):
    names = {**pem, "tmp": str(tmp_path)}
    with pytest.raises(ConfigError) as e:
        parse_registries(_fill(doc, names), "/etc/mke/registries.yaml")
    msg = str(e.value)
    assert msg.startswith(f"/etc/mke/registries.yaml: {field} "), msg
    assert reason in msg and "\n" not in msg, msg
    # the same document as mke.yaml's registries section: the same error under registries.
    if "registries" not in doc:
        with pytest.raises(ConfigError) as e2:
            parse_config({"registries": _fill(doc, names)}, "mke.yaml")
        assert str(e2.value).startswith(f"mke.yaml: registries.{field} "), str(e2.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 0")
def test_an_unreadable_ca_file_is_refused(pem):
    with pytest.raises(ConfigError, match=r"configs\[r.io\].caFile: .*cannot read it: Permission denied"):
        parse_registries({"configs": {"r.io": {"caFile": pem["unreadable.pem"]}}}, "r.yaml")


def test_load_registries_reads_yaml_and_names_the_file(tmp_path):
    f = tmp_path / "registries.yaml"
    f.write_text("mirrors:\n  registry.k8s.io:\n    endpoints: [http://10.0.0.1:5000]\n")
    assert load_registries(f).mirrors["registry.k8s.io"].endpoints == ("http://10.0.0.1:5000",)
    f.write_text("mirrors: [\n")
    with pytest.raises(ConfigError, match=rf"^{f}: not valid YAML at line"):
        load_registries(f)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'nope.yaml'}: cannot read the registries file"):
        load_registries(tmp_path / "nope.yaml")
    f.write_text("")
    assert load_registries(f).mirrors == {}


def test_mke_worker_refuses_a_bad_registries_file_with_one_line(tmp_path):
    f = tmp_path / "registries.yaml"
    f.write_text("mirrors:\n  docker.io:\n    endpoint: [https://mirror.internal]\n")
    res = subprocess.run([sys.executable, "-m", "mke", "worker", "--registries", str(f), "--data-dir",
                          str(tmp_path / "data")], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == ConfigError.exit_code, res.stderr
    assert res.stderr == f"mke: error: {f}: mirrors[docker.io].endpoint: did you mean 'endpoints'?\n"
    assert not (tmp_path / "data").exists()  # refused before anything was written


# --------------------------------------------------------------------------- hosts.toml


def test_hosts_files_list_mirrors_first_then_the_registry(pem):
    r = parse_registries({
        "mirrors": {"registry.k8s.io": {"endpoints": ["http://10.0.0.1:5000", "https://mirror.internal/k8s"]},
                    "docker.io": {"endpoints": ["https://mirror.internal"]},
                    "*": {"endpoints": ["http://10.0.0.1:5000"]}},
        "configs": {"mirror.internal": {"caFile": pem["ca.pem"], "certFile": pem["client.pem"],
                                        "keyFile": pem["client.key"]},
                    "registry.internal:5443": {"insecureSkipVerify": True}},
    }, "r.yaml")
    files = hosts_files(r, "r.yaml")
    assert sorted(files) == ["_default", "docker.io", "mirror.internal", "registry.internal:5443",
                             "registry.k8s.io"]
    k8s = tomllib.loads(files["registry.k8s.io"])
    assert k8s["server"] == "https://registry.k8s.io"
    assert list(k8s["host"]) == ["http://10.0.0.1:5000", "https://mirror.internal/k8s"]  # in order
    assert k8s["host"]["http://10.0.0.1:5000"] == {"capabilities": ["pull", "resolve"]}
    assert k8s["host"]["https://mirror.internal/k8s"] == {
        "capabilities": ["pull", "resolve"], "ca": pem["ca.pem"], "client": [[pem["client.pem"], pem["client.key"]]]}
    assert tomllib.loads(files["docker.io"])["server"] == "https://registry-1.docker.io"  # as containerd's default
    default = tomllib.loads(files["_default"])
    assert "server" not in default and list(default["host"]) == ["http://10.0.0.1:5000"]
    assert tomllib.loads(files["registry.internal:5443"]) == {"server": "https://registry.internal:5443",
                                                              "skip_verify": True}
    assert tomllib.loads(files["mirror.internal"])["ca"] == pem["ca.pem"]
    assert files["registry.k8s.io"].startswith("# Generated by mke from r.yaml")


def test_no_registries_no_files():
    assert hosts_files(parse_registries({}, "r.yaml")) == {}


def test_containerd_points_cri_at_the_hosts_dir(tmp_path):
    ctx = make_ctx(tmp_path)
    cfg = tomllib.loads(containerd_config(ctx))
    registry = cfg["plugins"]["io.containerd.cri.v1.images"]["registry"]
    assert registry == {"config_path": f"{tmp_path}/data/containerd/certs.d"}  # removed by reset with containerd/


def _ctx_with(tmp_path: Path, doc: dict):
    return make_ctx(tmp_path, registries=parse_registries(doc, "r.yaml"), registries_source="r.yaml")


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


def test_containerd_init_writes_and_prunes_only_its_own_hosts_files(tmp_path):
    ctx = _ctx_with(tmp_path, {"mirrors": {"registry.k8s.io": {"endpoints": ["http://10.0.0.1:5000"]},
                                           "docker.io": {"endpoints": ["https://mirror.internal"]}}})
    Containerd(ctx).init()
    d = ctx.paths.registry_hosts_dir
    assert sorted(p.name for p in d.iterdir()) == ["docker.io", "registry.k8s.io"]
    assert _mode(d / "docker.io" / "hosts.toml") == 0o644
    assert json.loads(ctx.paths.registry_hosts_record.read_text()) == ["docker.io", "registry.k8s.io"]
    assert _mode(ctx.paths.registry_hosts_record) == 0o600
    # someone's own file, and a certificate beside mke's
    (d / "quay.io").mkdir()
    (d / "quay.io" / "hosts.toml").write_text('server = "https://quay.io"\n')
    (d / "docker.io" / "ca.crt").write_text(CA)

    Containerd(_ctx_with(tmp_path, {"mirrors": {"registry.k8s.io": {"endpoints": ["http://10.0.0.2:5000"]}}})).init()
    assert sorted(p.name for p in d.iterdir()) == ["docker.io", "quay.io", "registry.k8s.io"]
    assert not (d / "docker.io" / "hosts.toml").exists() and (d / "docker.io" / "ca.crt").exists()
    assert (d / "quay.io" / "hosts.toml").read_text() == 'server = "https://quay.io"\n'
    assert "10.0.0.2:5000" in (d / "registry.k8s.io" / "hosts.toml").read_text()
    assert json.loads(ctx.paths.registry_hosts_record.read_text()) == ["registry.k8s.io"]

    Containerd(_ctx_with(tmp_path, {})).init()  # no registries: mke's files go, the rest stays
    assert sorted(p.name for p in d.iterdir()) == ["docker.io", "quay.io"]
    assert json.loads(ctx.paths.registry_hosts_record.read_text()) == []
    assert not list(d.rglob(".*.tmp"))


def test_a_hosts_file_mke_did_not_write_is_never_replaced(tmp_path):
    ctx = _ctx_with(tmp_path, {"mirrors": {"quay.io": {"endpoints": ["http://10.0.0.1:5000"]}}})
    own = ctx.paths.registry_hosts_dir / "quay.io" / "hosts.toml"
    own.parent.mkdir(parents=True)
    own.write_text("# mine\n")
    with pytest.raises(ConfigError, match=rf"^{own}: exists and was not written by mke; remove it, or drop quay.io"):
        Containerd(ctx).init()
    assert own.read_text() == "# mine\n"


def test_the_record_names_only_dirs_under_the_hosts_dir(tmp_path):
    hd = HostsDir(tmp_path / "certs.d", tmp_path / "record.json")
    (tmp_path / "record.json").write_text(json.dumps(["../../etc", "/etc", "docker.io", "_default"]))
    assert hd.recorded() == {"docker.io", "_default"}
    (tmp_path / "record.json").write_text("{")
    with pytest.raises(ConfigError, match="record.json: unreadable"):
        hd.recorded()


def test_no_registries_leave_no_trace(tmp_path):
    ctx = make_ctx(tmp_path)
    Containerd(ctx).init()
    assert not ctx.paths.registry_hosts_dir.exists() and not ctx.paths.registry_hosts_record.exists()


# --------------------------------------------------------------------------- install


def test_install_worker_passes_the_registries_file_and_checks_it(tmp_path, monkeypatch):
    """On a stand-in for / with a fake systemctl (tests/support/initsystems.py: no systemd here)."""
    host = Host.make(tmp_path, "systemd")
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    f = tmp_path / "registries.yaml"
    f.write_text(yaml.safe_dump({"mirrors": {"registry.k8s.io": {"endpoints": ["http://10.0.0.1:5000"]}}}))
    token = tmp_path / "token"
    token.write_text(tokens()["worker"])

    def install_run(*argv: str) -> int:
        args = cli.make_parser("install").parse_args(["install", *argv])
        return install.run(args)

    assert install_run("worker", "--token-file", str(token), "--registries", str(f)) == 0
    assert f"--registries={f}" in (host.root / "etc/systemd/system/mke-worker.service").read_text()
    f.write_text("mirrors: {r.io: {}}\n")
    with pytest.raises(ConfigError, match=r"mirrors\[r.io\]: needs endpoints"):
        install_run("worker", "--token-file", str(token), "--registries", str(f), "--force")
    with pytest.raises(UsageError, match="--registries"):  # a controller has them in mke.yaml: no such flag
        install_run("controller", "--registries", str(f))
