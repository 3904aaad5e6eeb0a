"""mke/fips/table.py: the per-binary table and the JSON document."""

from __future__ import annotations

from mke.fips.policy import check_files, runtime_policy
from mke.fips.table import format_table, reports_document


def test_table_format(gobins):
    reports = check_files({"kube-apiserver": gobins["fips"], "etcd": gobins["plain"]}, runtime_policy())
    text = format_table(reports)
    lines = text.splitlines()
    assert lines[0].split() == ["BINARY", "GO", "GOFIPS140", "FIPS140", "DEFAULT", "FIPS", "MODULE", "(FUNCTIONS)",
                                "STATIC", "FIPS"]
    assert lines[1].startswith("etcd") and lines[1].rstrip().endswith("no")
    assert lines[2].startswith("kube-apiserver") and lines[2].rstrip().endswith("yes")
    assert "  etcd: built without the Go Cryptographic Module" in text
    doc = reports_document(reports, go_mode="native")
    assert doc["go_mode"] == "native" and doc["ok"] is False
    assert [(b["name"], b["ok"]) for b in doc["binaries"]] == [("etcd", False), ("kube-apiserver", True)]
