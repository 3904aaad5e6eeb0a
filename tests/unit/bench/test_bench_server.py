"""tests/bench/bench_server.py's small-controller setting: the size from the environment (the
cgroup it makes: tests/unit/mke/test_sysinfo.py)."""

from __future__ import annotations

import pytest

from tests.bench import bench_server as bsv
from tests.bench.bench_scale import Skip


@pytest.mark.parametrize("raw,size", [("2GiB", 2 << 30), ("1536Mi", 1536 << 20), ("2g", 2 << 30),
                                      ("2147483648", 2 << 30), ("", None)])
def test_the_size_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str, size: int | None) -> None:
    monkeypatch.setenv("MKE_BENCH_SERVER_MEMORY", raw)
    assert bsv.memory_from_env() == size


@pytest.mark.parametrize("raw", ["two gigs", "100Mi", "2TiB", "-1G"])
def test_a_bad_size_is_one_line(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("MKE_BENCH_SERVER_MEMORY", raw)
    with pytest.raises(Skip) as e:
        bsv.memory_from_env()
    assert "\n" not in str(e.value) and "MKE_BENCH_SERVER_MEMORY" in str(e.value)
