"""One source of truth on a controller: commands act on the running server's configuration
(mke.config.node_config), written by the server to <data-dir>/run/config.json."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mke import cli
from mke.config import load_config, node_config, parse_config, running_config_path, write_running_config
from mke.errors import ConfigError
from mke.node.datadir import DataDirLock


@pytest.fixture
def running(tmp_path: Path):
    """A data dir whose lock is held, as by a running `mke server`, with its effective configuration."""
    lock = DataDirLock(tmp_path)
    lock.acquire()
    cfg = parse_config({"api": {"address": "10.0.0.5", "externalAddress": "lb.example.com", "port": 7443}})
    write_running_config(tmp_path, cfg)
    yield tmp_path, cfg
    lock.release()


def test_the_running_configuration_is_written_private(running):
    data_dir, _ = running
    assert stat.S_IMODE(running_config_path(data_dir).stat().st_mode) == 0o600


def test_without_config_the_running_servers_configuration_is_used(running):
    data_dir, cfg = running
    assert node_config(data_dir, None) == cfg


def test_a_differing_config_file_is_reported_and_not_used(running, tmp_path_factory):
    data_dir, cfg = running
    other = tmp_path_factory.mktemp("cfg") / "mke.yaml"
    other.write_text("api:\n  address: 10.0.0.5\n  port: 7443\n")
    said: list[str] = []
    assert node_config(data_dir, other, warn=said.append) == cfg
    assert len(said) == 1 and "api.externalAddress" in said[0] and "using the running one" in said[0]


def test_without_a_running_server_the_file_is_used(tmp_path):
    cfg_file = tmp_path / "mke.yaml"
    cfg_file.write_text("api:\n  externalAddress: lb.example.com\n")
    data_dir = tmp_path / "data"
    # a config.json left behind by a server that was killed does not count: nobody holds the lock
    write_running_config(data_dir, parse_config({"api": {"externalAddress": "stale.example.com"}}))
    assert node_config(data_dir, cfg_file) == load_config(cfg_file)


def test_a_broken_running_configuration_is_one_error_naming_it(running):
    data_dir, _ = running
    running_config_path(data_dir).write_text("{not json")
    with pytest.raises(ConfigError, match="run/config.json"):
        node_config(data_dir, None)


def test_kubeconfig_admin_without_config_follows_the_running_server(running, make_pki, capsys):
    data_dir, _ = running
    make_pki(data_dir / "pki")
    assert cli.main(["kubeconfig", "admin", "--data-dir", str(data_dir)]) == 0
    assert "server: https://lb.example.com:7443" in capsys.readouterr().out
