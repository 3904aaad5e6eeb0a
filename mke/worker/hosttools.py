"""The host tools a worker's components execute, embedded and first on their PATH.

kubelet, kube-proxy, kube-router and the CNI plugins execute ``iptables``, ``ip6tables``
(with ``-save``/``-restore``), ``ipset``, ``mount`` and ``umount`` by name
(docs/host-userland.md). mke stages its own static builds of them into the bin dir and
puts that directory first on every child's PATH, so nothing is taken from the host.

iptables comes in two flavours that keep separate rule sets in the kernel: ``nft``
(nf_tables) and ``legacy`` (x_tables). All rules of a host must live in one of them, or
traffic meets rules nobody sees. ``choose_flavour`` decides once per worker start, as
kubernetes-sigs/iptables-wrappers does: the flavour that already holds rules wins
(kubelet's ``KUBE-IPTABLES-HINT`` chain counts most; a host whose Docker engine uses
iptables-legacy stays legacy), and a fresh host gets ``nft``. ``link_generic_names``
then points ``iptables``, ``iptables-save``, ... at that flavour's multi-call binary.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

FLAVOURS = ("nft", "legacy")
GENERIC = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
MULTI = {"nft": "xtables-nft-multi", "legacy": "xtables-legacy-multi"}
HINT_CHAIN = "KUBE-IPTABLES-HINT"


def rule_count(save_output: str) -> int:
    """Rules (``-A`` lines) in ``iptables-save`` output."""
    return sum(1 for line in save_output.splitlines() if line.startswith("-A "))


def _save(bin_dir: Path, flavour: str, family: str = "iptables") -> str:
    exe = bin_dir / MULTI[flavour]
    try:
        proc = subprocess.run([str(exe), f"{family}-save"], capture_output=True, text=True, timeout=30,
                              env={"PATH": str(bin_dir)}, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def choose_flavour(bin_dir: Path) -> str:
    """``nft`` or ``legacy`` for this host (see the module doc)."""
    saves = {f: _save(bin_dir, f) + _save(bin_dir, f, "ip6tables") for f in FLAVOURS}
    hinted = [f for f in FLAVOURS if f":{HINT_CHAIN} " in saves[f] or f"-N {HINT_CHAIN}" in saves[f]]
    if len(hinted) == 1:
        return hinted[0]
    counts = {f: rule_count(saves[f]) for f in FLAVOURS}
    return "legacy" if counts["legacy"] > counts["nft"] else "nft"


def link_generic_names(bin_dir: Path, flavour: str) -> list[str]:
    """Point the generic iptables names in ``bin_dir`` at ``flavour``'s binary; returns those changed."""
    target = MULTI[flavour]
    changed = []
    for name in GENERIC:
        link = bin_dir / name
        try:
            if os.readlink(link) == target:
                continue
        except OSError:
            pass
        tmp = bin_dir / f".{name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
        changed.append(name)
    return changed


def prepare_iptables(bin_dir: Path) -> str | None:
    """Choose the flavour and link the generic names; None when this mke embeds no iptables."""
    if not all((bin_dir / m).exists() for m in MULTI.values()):
        return None
    flavour = choose_flavour(bin_dir)
    link_generic_names(bin_dir, flavour)
    return flavour
