"""tests/bench/bench_scale.py's pure parts: the settings from the environment and the SLO verdict."""

from __future__ import annotations

import pytest

from tests.bench import bench_scale as bs


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKE_BENCH_SCALE_NODES", "10, 100")
    monkeypatch.setenv("MKE_BENCH_SCALE_STORES", "etcd,sqlite")
    s = bs.Settings.from_env()
    assert (s.nodes, s.stores, s.pods_per_node) == ((10, 100), ("etcd", "sqlite"), 30)


def test_one_side_and_a_setting_for_mke(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    assert bs.Settings.from_env().sides == ("by hand", "mke")
    f = tmp_path / "tune.yaml"
    f.write_text("extraEnv:\n  kube-apiserver: {GOGC: '100'}\nkonnectivity: {agentPort: 8133}\n")
    monkeypatch.setenv("MKE_BENCH_SCALE_SIDES", "mke")
    monkeypatch.setenv("MKE_BENCH_SCALE_MKE_CONFIG", str(f))
    s = bs.Settings.from_env()
    assert s.sides == ("mke",)
    cp = bs.Mke(tmp_path, "etcd", "", tmp_path, s.mke_config)
    assert bs._merged(cp.config(), cp.extra) == {
        "konnectivity": {"enabled": False, "agentPort": 8133}, "network": {"provider": "custom"},
        "extraEnv": {"kube-apiserver": {"GOGC": "100"}}}


@pytest.mark.parametrize("var,value", [("MKE_BENCH_SCALE_NODES", "ten"), ("MKE_BENCH_SCALE_NODES", "0"),
                                       ("MKE_BENCH_SCALE_STORES", "etcd,redis"), ("MKE_BENCH_SCALE_STEADY", "x"),
                                       ("MKE_BENCH_SCALE_SIDES", "mke,kubeadm"),
                                       ("MKE_BENCH_SCALE_MKE_CONFIG", "/nonexistent/tune.yaml")])
def test_bad_settings_are_one_line(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(bs.Skip) as e:
        bs.Settings.from_env()
    assert "\n" not in str(e.value) and "MKE_BENCH_SCALE" in str(e.value)


def test_slo_verdict() -> None:
    ok = {"server": {0.99: {"mutating": (0.2, 100), "list-cluster": (2.0, 10)}}, "worst_mutating": ("PUT pods", 0.9)}
    assert bs.slo(ok) == (True, "held (mut 0.900 s, list 2.000 s)")
    slow = {**ok, "worst_mutating": ("POST pods", 1.5)}
    assert bs.slo(slow)[0] is False and bs.slo(slow)[1].startswith("BROKEN")
    lists = {"server": {0.99: {"list-cluster": (31.0, 3)}}, "worst_mutating": None}
    assert bs.slo(lists)[0] is False
    assert bs.slo({"error": "kwok exited"}) == (None, "failed")


def test_bench_servers_config_variable_shares_the_reader(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """bench_server's MKE_BENCH_SERVER_CONFIG is read like MKE_BENCH_SCALE_MKE_CONFIG, naming its own variable."""
    monkeypatch.delenv("MKE_BENCH_SERVER_CONFIG", raising=False)
    assert bs.mke_config_from_env("MKE_BENCH_SERVER_CONFIG") == {}
    good = tmp_path / "small.yaml"
    good.write_text("extraEnv: {kube-apiserver: {GOGC: '25'}}\n")
    monkeypatch.setenv("MKE_BENCH_SERVER_CONFIG", str(good))
    assert bs.mke_config_from_env("MKE_BENCH_SERVER_CONFIG") == {"extraEnv": {"kube-apiserver": {"GOGC": "25"}}}
    for text in ("- a list\n", "extraEnv: [\n"):
        good.write_text(text)
        with pytest.raises(bs.Skip) as e:
            bs.mke_config_from_env("MKE_BENCH_SERVER_CONFIG")
        assert str(e.value).startswith(f"MKE_BENCH_SERVER_CONFIG={good}: ") and "\n" not in str(e.value)
