"""``mke sysinfo``: what this host offers a controller and a worker (PASS/WARN/FAIL), changing nothing.

``mke server`` and ``mke worker`` run the same checks first (``preflight``) and stop on a FAIL.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mke.commands import add_data_dir

if TYPE_CHECKING:
    from mke.config import ClusterConfig
    from mke.node.sysinfo import Result

ROLES = {"controller": ("controller",), "worker": ("worker",), "controller+worker": ("controller", "worker")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", choices=list(ROLES), default="controller+worker",
                   help="check for this role (default: both)")
    p.add_argument("--config", "-c", type=Path, help="mke.yaml (for the ports; a running server's own wins)")
    add_data_dir(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def node_ports(cfg: ClusterConfig, roles: tuple[str, ...]) -> dict[int, str]:
    """port -> what listens there, for the roles this host runs."""
    from mke import storage
    from mke.components.controller_manager import SECURE_PORT as KCM_PORT
    from mke.components.scheduler import SECURE_PORT as SCHED_PORT

    out: dict[int, str] = {}
    if "controller" in roles:
        out[cfg.api.port] = "kube-apiserver (api.port)"
        out[cfg.api.mke_api_port] = "mke API (api.mkeAPIPort)"
        out[KCM_PORT] = "kube-controller-manager"
        out[SCHED_PORT] = "kube-scheduler"
        for name, port in storage.get(cfg.storage.type).ports(cfg).items():
            out[port] = name
        if cfg.konnectivity.enabled:
            out[cfg.konnectivity.agent_port] = "konnectivity-server (konnectivity.agentPort)"
            out[cfg.konnectivity.admin_port] = "konnectivity-server (konnectivity.adminPort)"
            out[cfg.konnectivity.health_port] = "konnectivity-server (konnectivity.healthPort)"
    if "worker" in roles:
        out[10250] = "kubelet"
        out.setdefault(10256, "kube-proxy health")
    return out


def check(cfg: ClusterConfig, roles: tuple[str, ...], data_dir: Path, *, modules: tuple[str, ...] = ()) -> list[Result]:
    from mke.node.datadir import holder_pid, run_dir
    from mke.node.process import recorded_process
    from mke.node.sysinfo import REQUIRED_MODULES, SysInfo

    # components a killed mke left running still hold their ports; the next start stops them first
    left = set()
    for pid_file in (run_dir(data_dir).glob("*.pid") if run_dir(data_dir).is_dir() else ()):
        pid = recorded_process(pid_file)
        if pid:
            left.add(pid)
    return SysInfo(roles=roles, ports=node_ports(cfg, roles), data_dir=data_dir,
                   modules=tuple(dict.fromkeys((*REQUIRED_MODULES, *modules))),
                   own_ports_ok=holder_pid(data_dir) is not None, own_pids=frozenset(left)).run()


def preflight(cfg: ClusterConfig, roles: tuple[str, ...], data_dir: Path, *, ignore: bool,
              modules: tuple[str, ...] = ()) -> None:
    """Before ``server``/``worker`` start anything: every FAIL and WARN on stderr; a FAIL stops the
    start (PreflightError naming the first) unless ``ignore``."""
    from mke.errors import PreflightError
    from mke.node.sysinfo import FAIL, WARN

    results = check(cfg, roles, data_dir, modules=modules)
    fails = [r for r in results if r.verdict == FAIL]
    for r in results:
        if r.verdict == WARN or (r.verdict == FAIL and ignore):
            print(f"mke: sysinfo: {r.line()}", file=sys.stderr, flush=True)
    if fails and not ignore:
        more = f" (and {len(fails) - 1} more: mke sysinfo lists them)" if len(fails) > 1 else ""
        raise PreflightError(f"sysinfo: {fails[0].line()}{more}; fix it, or start with --ignore-sysinfo")


def run(args: argparse.Namespace) -> int:
    from mke.config import node_config
    from mke.errors import PreflightError
    from mke.network import get as network_get
    from mke.node.datadir import data_dir_from
    from mke.node.sysinfo import FAIL, verdict

    data_dir = data_dir_from(args.data_dir)
    cfg = node_config(data_dir, args.config)
    roles = ROLES[args.role]
    modules = tuple(network_get(cfg.network.provider).kernel_modules) if "worker" in roles else ()
    results = check(cfg, roles, data_dir, modules=modules)
    overall = verdict(results)
    if args.json:
        print(json.dumps({"verdict": overall, "roles": list(roles),
                          "checks": [{"name": r.name, "verdict": r.verdict, "detail": r.detail} for r in results]},
                         indent=1))
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            print(f"{r.name:<{width}}  {r.verdict}  {r.detail}".rstrip())
        print(f"{'verdict':<{width}}  {overall}")
    return PreflightError.exit_code if overall == FAIL else 0
