"""tests/bench/scale_report.py: histograms from Prometheus text, quantiles, SLO classes, tables."""

from __future__ import annotations

import math

import pytest

from tests.bench import scale_report as sr

TEXT = """\
# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="0.1"} 8
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="1"} 10
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1",le="+Inf"} 10
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 1.5
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 10
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1",le="0.1"} 0
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1",le="1"} 2
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1",le="+Inf"} 4
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="",scope="",subresource="/readyz",verb="GET",version="",le="+Inf"} 7
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="WATCH",version="v1",le="+Inf"} 3
apiserver_request_total{code="200"} 5
"""


def test_parse_keeps_every_bucket_series_and_drops_the_rest() -> None:
    h = sr.parse_histograms(TEXT)
    assert len(h) == 4
    post = next(v for k, v in h.items() if ("verb", "POST") in k)
    assert post == {0.1: 8.0, 1.0: 10.0, math.inf: 10.0}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    b = {0.1: 8.0, 1.0: 10.0, math.inf: 10.0}
    assert sr.histogram_quantile(0.5, b) == pytest.approx(0.1 * 5 / 8)
    assert sr.histogram_quantile(0.9, b) == pytest.approx(0.1 + 0.9 * 1 / 2)
    assert sr.histogram_quantile(0.99, {0.1: 0, 1.0: 2, math.inf: 4}) == 1.0  # in +Inf: the highest bound
    assert sr.histogram_quantile(0.99, {0.1: 0, math.inf: 0}) is None


def test_classes_and_the_delta_between_scrapes() -> None:
    before = sr.parse_histograms(TEXT)
    after = sr.parse_histograms(TEXT.replace('le="1"} 10', 'le="1"} 12').replace('le="+Inf"} 10', 'le="+Inf"} 12'))
    delta = sr.subtract(after, before)
    q = sr.class_quantiles(delta, 0.99)
    assert q["mutating"] == (pytest.approx(0.1 + 0.9 * 0.99), 2)
    assert q["list-cluster"] == (None, 0)
    assert "get" not in q  # /readyz is no resource; WATCH has no SLO
    assert sr.worst_pair(after, "mutating") == ("POST configmaps", pytest.approx(0.1 + 0.9 * (11.88 - 8) / 4))
    assert sr.request_class({"resource": "pods", "verb": "LIST", "scope": "namespace"}) == "list-namespace"
    assert sr.request_class({"resource": "pods", "verb": "PATCH", "scope": "resource"}) == "mutating"
    assert sr.request_class({"resource": "pods", "verb": "DELETE", "scope": "namespace"}) is None  # a collection


def test_percentile_ratio_and_table() -> None:
    assert sr.percentile([], 0.5) is None
    assert sr.percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert sr.percentile(list(range(1, 101)), 0.99) == 99
    assert sr.ratio(3.0, 2.0) == "1.50x"
    assert sr.ratio(None, 2.0) == "-" and sr.ratio(1.0, 0) == "inf"
    assert sr.table(["what", "n"], [["a", "1"], ["bbb", "22"]]).splitlines() == ["what   n", "----  --", "a      1",
                                                                                "bbb   22"]
