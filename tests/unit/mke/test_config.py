"""mke/config.py: defaults, round trip through `mke config create`, and errors that name the field."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mke.config import ClusterConfig, default_config, dump_config, load_config, parse_config, with_overrides
from mke.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def run_mke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mke", *args], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_default_round_trips_through_yaml() -> None:
    text = dump_config(default_config())
    assert parse_config(yaml.safe_load(text)) == default_config()


def test_config_create_then_validate(tmp_path: Path) -> None:
    created = run_mke("config", "create")
    assert created.returncode == 0, created.stderr
    doc = yaml.safe_load(created.stdout)
    for key in ("api", "network", "storage", "konnectivity", "controlPlane", "images", "extraArgs"):
        assert key in doc
    f = tmp_path / "mke.yaml"
    f.write_text(created.stdout)
    ok = run_mke("config", "validate", str(f))
    assert ok.returncode == 0 and "valid" in ok.stdout


def test_validate_reports_field_and_exit_code(tmp_path: Path) -> None:
    f = tmp_path / "mke.yaml"
    f.write_text("network:\n  podCIDR: 10.0.0/8\n")
    res = run_mke("config", "validate", str(f))
    assert res.returncode == ConfigError.exit_code
    assert res.stderr.count("\n") == 1  # one line
    assert f"{f}: network.podCIDR:" in res.stderr


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    f = tmp_path / "mke.yaml"
    f.write_text("")
    assert load_config(f) == ClusterConfig()


def test_partial_config_keeps_other_defaults() -> None:
    cfg = parse_config({"storage": {"type": "kine", "kine": {"dataSource": "postgres://u:p@127.0.0.1:5432/k"}},
                        "extraArgs": {"kube-apiserver": {"v": 2, "--audit-log-maxage": "3", "enable-x": True}}})
    assert cfg.storage.type == "kine"
    assert cfg.network == default_config().network
    assert cfg.args_for("kube-apiserver") == {"v": "2", "audit-log-maxage": "3", "enable-x": "true"}


def test_extra_env_is_per_component_and_strings() -> None:
    cfg = parse_config({"extraEnv": {"kube-apiserver": {"GOGC": 100, "GOMEMLIMIT": "1GiB"}, "etcd": None}})
    assert cfg.env_for("kube-apiserver") == {"GOGC": "100", "GOMEMLIMIT": "1GiB"}
    assert cfg.env_for("etcd") == {} and cfg.env_for("kube-scheduler") == {}
    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg


def test_pod_security_defaults_and_choices() -> None:
    psa = default_config().pod_security
    assert (psa.enforce, psa.audit, psa.warn, psa.exempt_namespaces) == ("baseline", "restricted", "restricted",
                                                                         ("kube-system",))
    cfg = parse_config({"podSecurity": {"enforce": "restricted", "exemptNamespaces": ["kube-system", "ops"]}})
    assert cfg.pod_security.enforce == "restricted" and cfg.pod_security.exempt_namespaces == ("kube-system", "ops")
    # nothing enforced: kube-system need not be exempt
    assert parse_config({"podSecurity": {"enforce": "privileged", "exemptNamespaces": []}}).pod_security.enforce


@pytest.mark.parametrize(
    "doc, field, words",
    [
        ({"network": {"podCidr": "10.0.0.0/16"}}, "network.podCidr", "did you mean 'podCIDR'"),
        ({"netwrok": {}}, "netwrok", "did you mean 'network'"),
        ({"network": {"serviceCIDR": "10.96.0.1/12"}}, "network.serviceCIDR", "CIDR"),
        ({"network": {"serviceCIDR": "172.0.0.0/11"}}, "network.serviceCIDR", "/12"),
        ({"network": {"serviceCIDR": "10.244.0.0/20"}}, "network.serviceCIDR", "overlaps"),
        ({"network": {"provider": "flannel"}}, "network.provider", "kuberouter, bridge, calico, custom"),
        ({"network": {"provider": "calico"}}, "network.provider", "images.registry"),
        ({"network": {"clusterDomain": "Bad_Domain"}}, "network.clusterDomain", "DNS domain"),
        ({"api": {"port": 70000}}, "api.port", "1-65535"),
        ({"api": {"port": "6443"}}, "api.port", "port number"),
        ({"api": {"address": "my-host"}}, "api.address", "not an IP"),
        ({"api": {"address": "127.0.0.1"}}, "api.address", "loopback address, which other hosts cannot reach"),
        ({"api": {"address": "::1"}}, "api.address", "loopback"),
        ({"api": {"address": "0.0.0.0"}}, "api.address", "unspecified"),
        ({"api": {"sans": "a.example.com"}}, "api.sans", "list"),
        ({"api": {"sans": ["ok.example.com", "bad host"]}}, "api.sans[1]", "DNS name"),
        ({"api": {"mkeAPIPort": 6443}}, "api.mkeAPIPort", "already used"),
        ({"storage": {"type": "mysql"}}, "storage.type", "etcd, kine"),
        ({"storage": {"type": "kine", "kine": {"dataSource": "redis://x"}}}, "storage.kine.dataSource", "scheme"),
        ({"storage": {"kine": {"dataSource": "sqlite:///x.db"}}}, "storage.kine.dataSource", "storage.type"),
        ({"konnectivity": {"enabled": "yes"}}, "konnectivity.enabled", "true or false"),
        ({"images": {"coredns": "coredns/coredns"}}, "images.coredns", "no tag"),
        ({"images": {"registry": "http://reg"}}, "images.registry", "registry"),
        ({"extraArgs": {"kube-apiserer": {}}}, "extraArgs.kube-apiserer", "did you mean 'kube-apiserver'"),
        ({"extraArgs": {"kube-apiserver": {"v": [1]}}}, "extraArgs.kube-apiserver.v", "scalar"),
        ({"extraArgs": {"kine": {"v": "1"}}}, "extraArgs.kine", "storage.type"),
        ({"extraEnv": {"kube-apiserer": {}}}, "extraEnv.kube-apiserer", "did you mean 'kube-apiserver'"),
        ({"extraEnv": {"kube-apiserver": {"GO GC": "50"}}}, "extraEnv.kube-apiserver.GO GC", "variable name"),
        ({"extraEnv": {"kube-apiserver": {"GOGC": [50]}}}, "extraEnv.kube-apiserver.GOGC", "string or number"),
        ({"extraEnv": {"kube-apiserver": "GOGC=50"}}, "extraEnv.kube-apiserver", "mapping"),
        ({"extraEnv": {"kine": {"GOGC": "50"}}}, "extraEnv.kine", "storage.type"),
        ({"controlPlane": []}, "controlPlane", "mapping"),
        ({"podSecurity": {"enforce": "baseine"}}, "podSecurity.enforce", "did you mean 'baseline'"),
        ({"podSecurity": {"warn": "strict"}}, "podSecurity.warn", "privileged, baseline, restricted"),
        ({"podSecurity": {"audit": True}}, "podSecurity.audit", "expected a string"),
        ({"podSecurity": {"exemptNamespaces": "kube-system"}}, "podSecurity.exemptNamespaces", "list"),
        ({"podSecurity": {"exemptNamespaces": ["kube-system", "Bad_NS"]}}, "podSecurity.exemptNamespaces[1]",
         "not a namespace name"),
        ({"podSecurity": {"exemptNamespaces": ["kube-system", "kube-system"]}},
         "podSecurity.exemptNamespaces[1]", "listed twice"),
        ({"podSecurity": {"exemptNamespaces": ["ops"]}}, "podSecurity.exemptNamespaces", "must include kube-system"),
        ({"podSecurity": {"exemptNamespace": []}}, "podSecurity.exemptNamespace", "did you mean 'exemptNamespaces'"),
        ([1, 2], "(top level)", "mapping"),
    ],
)
def test_errors_name_the_field(doc: object, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc, "cfg.yaml")
    msg = str(e.value)
    assert msg.startswith(f"cfg.yaml: {field}:"), msg
    assert words in msg, msg


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    f = tmp_path / "mke.yaml"
    f.write_text("api:\n  port: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_config(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_image_registry_override() -> None:
    cfg = parse_config({"images": {"registry": "registry.local:5000/mirror"}})
    assert cfg.images.ref("coredns") == "registry.local:5000/mirror/coredns/coredns:v1.15.0"
    assert cfg.images.ref("calico_node").startswith("registry.local:5000/mirror/calico/node:")
    assert default_config().images.ref("pause") == "registry.k8s.io/pause:3.10.2"


def test_derived_addresses_and_overrides() -> None:
    cfg = default_config()
    assert cfg.network.kubernetes_service_ip == "10.96.0.1"
    assert cfg.network.dns_service_ip == "10.96.0.10"
    changed = with_overrides(cfg, **{"control_plane.worker": True})
    assert changed.control_plane.worker and not cfg.control_plane.worker
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.api.port = 1  # type: ignore[misc]  # frozen


# -- issue 19: every config error at once, duplicate keys, other distributions' files


def test_every_error_is_reported_at_once_one_line_each(tmp_path):
    p = tmp_path / "mke.yaml"
    p.write_text("api:\n  port: 99999\n  adress: 10.0.0.1\nnetwork:\n  podCIDR: nope\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    lines = str(e.value).splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith(f"{p}: ") for line in lines)
    text = str(e.value)
    assert "api.port" in text and "api.adress: unknown key (did you mean 'address'?)" in text
    assert "network.podCIDR" in text and "bogus: unknown key" in text


def test_the_cli_prints_each_error_on_its_own_line(tmp_path):
    p = tmp_path / "mke.yaml"
    p.write_text("api:\n  port: 0\nnetwork:\n  podCIDR: nope\n")
    res = subprocess.run([sys.executable, "-m", "mke", "config", "validate", str(p)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == ConfigError.exit_code
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"mke: error: {p}: ") for line in lines), res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("text,key,first", [
    ("api:\n  port: 6443\napi:\n  port: 7443\n", "api", 1),
    ("api:\n  port: 6443\n  port: 7443\n", "port", 2),
])
def test_a_key_given_twice_is_an_error(tmp_path, text, key, first):
    p = tmp_path / "mke.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=rf"{p}: line \d+: key '{key}' is given twice \(first at line {first}\)"):
        load_config(p)


@pytest.mark.parametrize("text,what", [
    ("apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  api:\n    address: 10.0.0.1\n", "k0s"),
    ("write-kubeconfig-mode: '0644'\ntls-san:\n  - lb.example.com\n", "k3s"),
])
def test_another_distributions_config_gets_a_hint(tmp_path, text, what):
    p = tmp_path / "mke.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert len(str(e.value).splitlines()) == 1
    assert what in str(e.value) and "mke config create" in str(e.value)
