"""mke/worker/hosttools.py: choosing the iptables flavour from what each one's -save prints,
and the generic names pointing at it. The multi-call binaries are small scripts here that
print canned -save output (the real static builds are run in tests/integration/test_host_userland.py)."""

from __future__ import annotations

import os
from pathlib import Path

from mke.worker import hosttools

EMPTY = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
DOCKER = "*nat\n:DOCKER - [0:0]\n-A PREROUTING -j DOCKER\n-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE\nCOMMIT\n"
HINT = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"


def fake_multi(bin_dir: Path, flavour: str, v4: str, v6: str = EMPTY) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / hosttools.MULTI[flavour]
    exe.write_text(f"#!/bin/sh\ncase \"$1\" in\n iptables-save) printf '%s' '{v4}';;\n"
                   f" ip6tables-save) printf '%s' '{v6}';;\n *) exit 2;;\nesac\n")
    exe.chmod(0o755)


def test_a_fresh_host_gets_nft(tmp_path):
    fake_multi(tmp_path, "nft", EMPTY)
    fake_multi(tmp_path, "legacy", EMPTY)
    assert hosttools.prepare_iptables(tmp_path) == "nft"
    for name in hosttools.GENERIC:
        assert os.readlink(tmp_path / name) == "xtables-nft-multi"


def test_rules_in_legacy_keep_the_host_on_legacy(tmp_path):
    fake_multi(tmp_path, "nft", EMPTY)
    fake_multi(tmp_path, "legacy", DOCKER)
    assert hosttools.choose_flavour(tmp_path) == "legacy"


def test_kubelets_hint_chain_decides_over_rule_counts(tmp_path):
    fake_multi(tmp_path, "nft", HINT)
    fake_multi(tmp_path, "legacy", DOCKER)
    assert hosttools.choose_flavour(tmp_path) == "nft"


def test_relinking_changes_only_what_differs(tmp_path):
    fake_multi(tmp_path, "nft", EMPTY)
    fake_multi(tmp_path, "legacy", EMPTY)
    assert hosttools.link_generic_names(tmp_path, "legacy") == list(hosttools.GENERIC)
    assert hosttools.link_generic_names(tmp_path, "legacy") == []
    assert hosttools.link_generic_names(tmp_path, "nft") == list(hosttools.GENERIC)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_without_embedded_iptables_nothing_is_linked(tmp_path):
    assert hosttools.prepare_iptables(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
