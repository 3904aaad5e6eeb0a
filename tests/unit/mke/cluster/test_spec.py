"""The cluster file of mke cluster (mke/cluster/spec.py): what loads, and one line per error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mke.cluster.spec import DEFAULT_DATA_DIR, DEFAULT_MKE_PATH, EXAMPLE, load_cluster, parse_cluster
from mke.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(text)
    return p


def test_the_example_loads(tmp_path):
    (tmp_path / "id").write_text("key\n")
    spec = load_cluster(write(tmp_path, EXAMPLE.replace("~/.ssh/id_ed25519", "id")))
    assert [h.role for h in spec.hosts] == ["controller"] * 3 + ["worker"] * 2
    assert [h.address for h in spec.controllers] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert spec.hosts[0].ssh.key_path == tmp_path / "id"  # relative to the cluster file
    assert spec.hosts[4].data_dir == "/srv/mke" and spec.hosts[0].data_dir == DEFAULT_DATA_DIR
    assert spec.hosts[3].flags == ("--label=tier=web",)
    assert spec.mke_path == DEFAULT_MKE_PATH and spec.mke_file is None and spec.workers_in_parallel == 5
    assert spec.config == {"storage": {"type": "etcd"}}


def test_host_ssh_overrides_the_defaults(tmp_path):
    spec = load_cluster(write(tmp_path, """
ssh: {user: admin, port: 2222, knownHosts: kh}
hosts:
  - {address: c1.example.com, role: controller+worker, ssh: {port: 22}, init: detached, name: c1}
"""))
    h = spec.hosts[0]
    assert (h.ssh.user, h.ssh.port, h.ssh.known_hosts) == ("admin", 22, tmp_path / "kh")
    assert h.controller and h.worker and h.service_role == "controller" and h.init == "detached"
    assert h.config_path == "/var/lib/mke/cluster/mke.yaml" and h.token_path == "/var/lib/mke/cluster/join-token"


BAD = [
    ("hosts: []\n", "hosts: expected a list"),
    ("hosts:\n  - {address: 10.0.0.1, role: master}\n", "hosts[0].role: 'master' is not one of"),
    ("hosts:\n  - {address: 10.0.0.1, role: wroker}\n", "(did you mean 'worker'?)"),
    ("hosts:\n  - {role: controller}\n", "hosts[0].address: missing"),
    ("hosts:\n  - {address: 'a b', role: controller}\n", "hosts[0].address: 'a b' is neither"),
    ("hosts:\n  - {address: 0.0.0.0, role: controller}\n", "hosts[0].address: 0.0.0.0 is not a host's address"),
    ("hosts:\n  - {address: 10.0.0.1, role: worker}\n", "hosts: no controller"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\n  - {address: 10.0.0.1, role: worker}\n",
     "hosts[1].address: 10.0.0.1 port 22 is hosts[0] already"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, name: a}\n  - {address: 10.0.0.2, role: worker, name: a}\n",
     "hosts[1].name: 'a' is the name of hosts[0] already"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, name: A_1}\n", "hosts[0].name: 'A_1'"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, dataDir: relative}\n", "hosts[0].dataDir: 'relative'"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, dataDir: /}\n", "hosts[0].dataDir: '/'"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, dataDir: '/a b'}\n", "hosts[0].dataDir: '/a b'"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, init: systemd}\n", "hosts[0].init: 'systemd'"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, flags: --x}\n", "hosts[0].flags: expected a list"),
    ("hosts:\n  - {address: 10.0.0.1, role: worker, flags: [--bogus]}\n  - {address: 10.0.0.2, role: controller}\n",
     "hosts[0].flags: unrecognized arguments: --bogus (these are flags of `mke worker`)"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, flags: [--kubelet-arg=v=2]}\n",
     "hosts[0].flags: unrecognized arguments: --kubelet-arg=v=2 (these are flags of `mke server`)"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, flags: [--data-dir=/x]}\n",
     "hosts[0].flags: mke cluster sets --data-dir itself: use dataDir"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, flags: [--enable-worker]}\n",
     "use role: controller+worker"),
    ("hosts:\n  - {address: 10.0.0.1, role: worker, flags: [--token-file=/t]}\n  - {address: 10.0.0.2, role: controller}\n",
     "hosts[0].flags: mke cluster sets --token-file itself"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, ssh: {port: 0}}\n", "hosts[0].ssh.port: expected a port"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller, ssh: {prot: 22}}\n", "hosts[0].ssh.prot: unknown key (did you mean 'port'?)"),
    ("ssh: {keyPath: missing-key}\nhosts:\n  - {address: 10.0.0.1, role: controller}\n", "ssh.keyPath: "),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\nmke: {file: nope}\n", "mke.file: "),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\nmke: {path: bin/mke}\n", "mke.path: 'bin/mke'"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\nairgapBundles: [nope.tar]\n", "airgapBundles[0]: "),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\nworkersInParallel: 0\n", "workersInParallel: expected"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\nconfig: {network: {podCIDR: x}}\n", "config.network.podCIDR:"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\nconfig: {netwrok: {}}\n", "config.netwrok: unknown key"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\n  - {address: 10.0.0.2, role: controller}\n"
     "config: {api: {address: 10.0.0.1}}\n", "config.api.address: leave it empty"),
    ("hosts:\n  - {address: 10.0.0.1, role: controller}\nhostz: []\n", "hostz: unknown key (did you mean 'hosts'?)"),
    ("- a\n- b\n", "(top level): expected a mapping"),
]


@pytest.mark.parametrize("text,fragment", BAD, ids=[b[1][:40] for b in BAD])
def test_every_error_is_one_line_naming_the_file_and_field(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_cluster(path)
    lines = str(e.value).splitlines()
    assert any(fragment in line for line in lines), lines
    assert all(line.startswith(f"{path}: ") for line in lines), lines


def test_every_error_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_cluster(write(tmp_path, "hosts:\n  - {address: 'a b', role: master}\n  - {address: 10.0.0.2, role: controller, ssh: {port: x}}\nworkersInParallel: -1\n"))
    lines = str(e.value).splitlines()
    assert len(lines) == 4, lines
    for field in ("hosts[0].address", "hosts[0].role", "hosts[1].ssh.port", "workersInParallel"):
        assert any(f": {field}: " in line for line in lines), (field, lines)


def test_a_config_the_cluster_file_carries_is_the_same_model_as_mke_yaml(tmp_path):
    from mke.config import parse_config

    spec = parse_cluster(yaml.safe_load("hosts: [{address: 10.0.0.1, role: controller}]\n"
                                        "config: {storage: {type: kine}, network: {provider: bridge}}\n"),
                         "c.yaml", tmp_path)
    cfg = parse_config(spec.config)
    assert cfg.storage.type == "kine" and cfg.network.provider == "bridge"
