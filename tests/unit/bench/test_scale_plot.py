"""tests/bench/scale_plot.py: bench_scale's printed tables read back, the SVG drawn from them, bad input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.bench import bench_scale as bs
from tests.bench import scale_plot as sp


def _result(rss_mib: float, worst_s: float) -> dict:
    kib = rss_mib * 1024
    return {"nodes_ready_s": 5.0, "scheduled_s": 150.0, "running_s": 151.0,
            "server": {0.5: {"mutating": (0.004, 10)}, 0.99: {"mutating": (0.03, 10), "list-cluster": (0.3, 5)}},
            "worst_mutating": ("DELETE secrets", worst_s), "client": {"mutating": (0.005, 0.04, 100)},
            "rss_kib": {"etcd": kib / 2, "kube-apiserver": kib / 2}, "hwm_kib": {"etcd": kib},
            "cpu_s": {"etcd": 10.0}, "store_bytes": 48 * 1048576, "client_errors": 0, "watch_events": 9}


def _log(capsys: pytest.CaptureFixture[str], steps: list[tuple[str, int, dict, dict]]) -> str:
    """What bench_scale prints for these steps (its own print_step), with a run's other lines around."""
    print("nox > python -m tests.bench bench_scale\nsteps 10 nodes x 30 pods; stores etcd")
    for store, nodes, mke, hand in steps:
        bs.print_step(store, nodes, nodes * 30, mke, hand)
    print("\n== goals\nAPI call latency SLO ...: held\n\n== datastores\n          10 nodes\n----  ------\n"
          "etcd  held (mut 0.046 s, list 0.3 s)")
    return capsys.readouterr().out


def test_the_printed_tables_read_back(capsys: pytest.CaptureFixture[str]) -> None:
    text = _log(capsys, [("etcd", 10, _result(547, 0.046), _result(549, 0.075)),
                         ("sqlite", 500, _result(1508, 0.075), {})])
    fig = sp.parse_log(text)
    assert set(fig) == {("etcd", 10, "mke"), ("etcd", 10, "by hand"), ("sqlite", 500, "mke")}
    assert fig[("etcd", 10, "mke")][sp.RSS] == 547 and fig[("etcd", 10, "by hand")][sp.WORST] == 0.075
    assert fig[("sqlite", 500, "mke")]["all pods bound"] == 150.0
    assert sp.parse_log("nothing printed by the bench\n") == {}


def test_a_later_log_replaces_a_step_only_where_it_has_figures(capsys: pytest.CaptureFixture[str]) -> None:
    both = sp.parse_log(_log(capsys, [("etcd", 500, _result(1712, 0.233), _result(1885, 0.09))]))
    again = sp.parse_log(_log(capsys, [("etcd", 500, _result(1738, 0.362), {})]))  # mke alone
    fig = sp.merge([both, again])
    assert fig[("etcd", 500, "mke")][sp.RSS] == 1738 and fig[("etcd", 500, "by hand")][sp.RSS] == 1885


def test_the_svg_has_a_line_per_store_and_side(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    steps = [(store, n, _result(500 + n * 2 + i, 0.04 + n / 5000), _result(520 + n * 2, 0.05))
             for i, store in enumerate(("etcd", "sqlite")) for n in (10, 100, 500)]
    log = tmp_path / "scale.log"
    log.write_text(_log(capsys, steps))
    out = tmp_path / "scale.svg"
    assert sp.main(["-o", str(out), "--caption", "2 cores", str(log)]) == 0
    root = ET.fromstring(out.read_text())
    ns = {"s": "http://www.w3.org/2000/svg"}
    lines = root.findall("s:polyline", ns)
    assert len(lines) == 2 * 2 * 2  # two panels, two stores, two sides
    titles = sorted({line.find("s:title", ns).text for line in lines})
    assert titles == ["SQLite, by hand", "SQLite, mke", "etcd, by hand", "etcd, mke"]
    assert all(len(line.get("points").split()) == 3 for line in lines)  # 10, 100, 500 nodes
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "SLO 1 s" in texts and "2 cores" in texts


def test_bad_input_is_one_line_and_writes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("nox > Session bench was successful\n")
    good = tmp_path / "good.log"
    good.write_text(_log(capsys, [("etcd", 10, _result(547, 0.046), {})]))
    out = tmp_path / "scale.svg"
    for args, says in ((["-o", str(out), str(tmp_path / "missing.log")], "missing.log: cannot read it"),
                       (["-o", str(out), str(empty)], "empty.log: no bench_scale step table"),
                       (["-o", str(tmp_path / "no" / "x.svg"), str(good)], "x.svg: its directory does not exist")):
        assert sp.main(args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err
    assert sorted(tmp_path.iterdir()) == [empty, good]


def test_the_docs_figure_is_drawn_from_the_logs_kept_beside_it(tmp_path: Path) -> None:
    """docs/scale/scale.svg is what the command in docs/performance.md makes from docs/scale/logs."""
    import re
    import shlex

    repo = Path(__file__).resolve().parents[3]
    doc = (repo / "docs" / "performance.md").read_text()
    cmd = re.search(r"python -m tests\.bench\.scale_plot (.*?)\n\n", doc, re.S)
    assert cmd, "docs/performance.md lost the command that draws docs/scale/scale.svg"
    words = shlex.split(cmd.group(1).replace("\\\n", " "))
    logs = [w for w in words if w.endswith(".log") or "{" in w]
    expanded = []
    for w in logs:
        m = re.match(r"(.*)\{(.*)\}(.*)", w)
        expanded += [f"{m.group(1)}{x}{m.group(3)}" for x in m.group(2).split(",")] if m else [w]
    caption = words[words.index("--caption") + 1]
    out = tmp_path / "scale.svg"
    assert sp.main(["-o", str(out), "--caption", caption, *(str(repo / p) for p in expanded)]) == 0
    assert out.read_text() == (repo / "docs" / "scale" / "scale.svg").read_text()
