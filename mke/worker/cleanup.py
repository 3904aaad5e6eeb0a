"""What ``mke reset`` removes on a worker, and the check that nothing is left.

In order (each step goes on when one fails, and says what it could not do):
1. processes: every process in the pods' cgroups (``<cgroup-root>/kubepods``), the runc
   containers of this containerd (``runc delete --force``), the shims serving this
   containerd's socket, then kubelet and containerd themselves (pid files in run/);
2. mounts: everything mounted under the data dir (pod volumes, container root file
   systems, pod network namespaces) and under the pod logs dir, deepest first, lazily;
3. network: the ``mke0`` bridge, routes of protocol ``mke`` (77), mke's iptables chains
   and every ``KUBE-*``/``CNI-*`` chain and rule (iptables-save | filter | iptables-restore,
   as k3s's killall script does), kube-proxy's nftables tables;
4. cgroups: the ``kubepods`` tree (and the cgroup root mke created) in every hierarchy;
5. files: the worker's parts of the data dir and the pod logs.

``leftovers()`` lists whatever of that still exists; the e2e tests assert it is empty.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from mke.node import process
from mke.node.datadir import EMBEDDED_WORKER_DIR
from mke.worker.context import WorkerPaths
from mke.worker.host import CGROUP_ROOT, remove_system_files

CHAIN_RE = re.compile(r"\b(KUBE-[A-Z0-9-]+|CNI-[A-Za-z0-9-]+|MKE-[A-Z0-9-]+)\b")
# A rule in a built-in chain that matches kube-router's ipsets (its pod-egress MASQUERADE in nat
# POSTROUTING names no chain of ours): left behind when kube-router's own cleanup misses it, it
# keeps the sets "in use by a kernel component" so they cannot be destroyed.
SET_RE = re.compile(r"--match-set (?:inet6:)?(?:kube-router-|KUBE-)")
WORKER_DIRS = ("worker", "kubelet", "containerd", "cni", "run/containerd", "tmp")
NFT_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))


def _noop(msg: str) -> None:
    pass


def _kubelet_settings(paths: WorkerPaths) -> tuple[str, str]:
    """(cgroup root, pod logs dir) that kubelet was configured with."""
    import yaml

    try:
        cfg = yaml.safe_load(paths.kubelet_config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    return str(cfg.get("cgroupRoot") or "/"), str(cfg.get("podLogsDir") or "")


# --------------------------------------------------------------------------- processes


def pod_cgroup_dirs(cgroup_root: str, root: Path = CGROUP_ROOT) -> list[Path]:
    rel = cgroup_root.strip("/")
    base = [root] if (root / "cgroup.controllers").exists() else [m for m in sorted(root.iterdir())
                                                                   if m.is_dir() and (m / "cgroup.procs").exists()]
    out = []
    for b in base:
        top = b / rel / "kubepods" if rel else b / "kubepods"
        if top.is_dir():
            out.append(top)
    return out


def pids_in(cgroup_dir: Path) -> set[int]:
    pids: set[int] = set()
    for procs in cgroup_dir.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(x) for x in procs.read_text().split()}
    return pids


def shim_pids(paths: WorkerPaths) -> set[int]:
    """containerd-shim-runc-v2 processes serving this worker's containerd (not another host's
    that uses the same path in its own mount namespace)."""
    sock = str(paths.containerd_socket)
    out = set()
    for pid in process.pids():
        args = process.cmdline(pid)
        if (args and os.path.basename(args[0]).startswith("containerd-shim") and sock in args
                and process.sees_same(pid, paths.data_dir)):
            out.add(pid)
    return out


def component_pids(paths: WorkerPaths, names: tuple[str, ...] = ("kubelet", "containerd")) -> set[int]:
    out = set()
    for n in names:
        pid = process.recorded_process(paths.run_dir / f"{n}.pid")
        if pid is not None and os.path.basename(process.exe(pid) or "") == n:
            out.add(pid)
    return out


# What reset and its check execute: mke's own static builds wherever it can.
RESET_TOOLS = ("runc", "xtables-nft-multi", "xtables-legacy-multi", "ipset", "kube-router")
MULTI = ("xtables-nft-multi", "xtables-legacy-multi")  # both iptables flavours keep their own rules


def bin_dirs(paths: WorkerPaths) -> list[Path]:
    """Where this node's staged binaries live: its own bin dir, and for ``mke server
    --enable-worker`` (whose worker data dir is ``<data-dir>/node``) the server's."""
    dirs = [paths.data_dir / "bin"]
    if paths.data_dir.name == EMBEDDED_WORKER_DIR:
        dirs.append(paths.data_dir.parent / "bin")
    return dirs


def tools_path(paths: WorkerPaths) -> str:
    """PATH for the tools reset runs: the node's staged ones first, then the process's PATH
    (which ``embedded_tools`` extends with the running mke's own)."""
    return ":".join([*map(str, bin_dirs(paths)), os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])


@contextlib.contextmanager
def embedded_tools(paths: WorkerPaths) -> Iterator[None]:
    """Make the running mke's static tools available to reset and its check where the node's
    staged ones are gone (after a reset, on a host that has no iptables or ipset of its own):
    staged from the payload into a temporary directory (in the data dir, which allows
    executing files: the runtime runs from it), put on PATH, removed afterwards."""
    import tempfile

    from mke.node.binaries import BinaryResolver

    if any((d / m).exists() for d in bin_dirs(paths) for m in MULTI):
        yield
        return
    names = BinaryResolver(paths.data_dir / "bin").embedded(RESET_TOOLS)
    if not names:  # a payload without host tools: the host's own, on PATH
        yield
        return
    made_dir = not paths.data_dir.exists()
    tmp = Path(tempfile.mkdtemp(prefix=".reset-tools-", dir=paths.data_dir if not made_dir else None))
    old = os.environ.get("PATH")
    try:
        resolver = BinaryResolver(tmp)
        resolver.prefetch(names)
        os.environ["PATH"] = ":".join([str(tmp), old or "/usr/sbin:/usr/bin:/sbin:/bin"])
        yield
    finally:
        if old is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def iptables_commands(path: str) -> list[tuple[str, list[str], list[str]]]:
    """(label, save argv, restore argv) for each iptables there is to read: both flavours and
    both families through mke's multi-call binaries, else the generic names on ``path``."""
    out = []
    for multi in MULTI:
        exe = shutil.which(multi, path=path)
        if exe:
            flavour = multi.split("-")[1]
            out += [(f"{fam}-{flavour}", [exe, f"{fam}-save"], [exe, f"{fam}-restore"]) for fam in ("iptables", "ip6tables")]
    if not out:
        for fam in ("iptables", "ip6tables"):
            s, r = shutil.which(f"{fam}-save", path=path), shutil.which(f"{fam}-restore", path=path)
            if s and r:
                out.append((fam, [s], [r]))
    return out


def stop_processes(paths: WorkerPaths, say: Callable[[str], None] = _noop) -> list[str]:
    problems = []
    cgroup_root, _ = _kubelet_settings(paths)
    # kubelet first, so that it does not restart what we kill
    comps = component_pids(paths, ("kubelet",))
    process.kill(comps)
    pods = set()
    for d in pod_cgroup_dirs(cgroup_root):
        pods |= pids_in(d)
    runc = shutil.which("runc", path=tools_path(paths)) or ""
    runc_root = paths.containerd_state / "runc" / "k8s.io"
    if runc_root.is_dir() and os.path.exists(runc):
        for cid in sorted(p.name for p in runc_root.iterdir() if p.is_dir()):
            subprocess.run([runc, "--root", str(runc_root), "delete", "--force", cid], capture_output=True, timeout=30)
    process.kill(pods)
    shims = shim_pids(paths)
    process.kill(shims)
    rest = component_pids(paths, ("containerd",))
    process.kill(rest)
    left = process.wait_gone(pods | shims | comps | rest)
    if left:
        problems.append(f"processes still running: {sorted(left)}")
    say(f"stopped {len(comps | rest)} components, {len(shims)} shims, {len(pods)} pod processes")
    return problems


# --------------------------------------------------------------------------- mounts


_MOUNT_ESCAPE = re.compile(r"\\(040|011|012|134)")
# kubelet's pod log dirs: <namespace>_<pod name>_<pod uid>
POD_LOG_DIR = re.compile(r"^[a-z0-9][a-z0-9.-]*_[a-z0-9][a-z0-9.-]*_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def unescape_mount_path(field: str) -> str:
    """A mount point as /proc/self/mountinfo writes it: the kernel escapes only space, tab,
    newline and backslash (as octal); every other byte, UTF-8 included, is as it is."""
    return _MOUNT_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(prefixes: list[Path], mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    roots = [os.path.realpath(p) for p in prefixes if str(p)]
    out = []
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        mp = unescape_mount_path(line.split()[4])
        if any(mp == r or mp.startswith(r.rstrip("/") + "/") for r in roots):
            out.append(mp)
    return sorted(set(out), key=lambda m: (-m.count("/"), m))


def unmount_all(prefixes: list[Path], say: Callable[[str], None] = _noop) -> list[str]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    problems = []
    for _ in range(3):  # nested and propagated mounts may reappear once
        mps = mounts_under(prefixes)
        if not mps:
            break
        for mp in mps:
            if libc.umount2(mp.encode(), mnt_detach) != 0:
                err = ctypes.get_errno()
                if err not in (22, 2):  # EINVAL (not a mount any more), ENOENT
                    problems.append(f"umount {mp}: {os.strerror(err)}")
        say(f"unmounted {len(mps)} mounts")
    left = mounts_under(prefixes)
    if left:
        problems.append(f"still mounted: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")
    return problems


# --------------------------------------------------------------------------- network


def iptables_filtered(save_text: str) -> tuple[str, int]:
    """iptables-save text without mke/kube/CNI chains and rules; (text, lines removed)."""
    out, removed = [], 0
    for line in save_text.splitlines():
        if line.startswith((":", "-A ")) and (CHAIN_RE.search(line) or (line.startswith("-A ") and SET_RE.search(line))):
            removed += 1
            continue
        out.append(line)
    return "\n".join(out) + "\n", removed


def clean_iptables(path: str, say: Callable[[str], None] = _noop) -> list[str]:
    problems = []
    for label, save, restore in iptables_commands(path):
        proc = subprocess.run(save, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            if "Table does not exist" not in proc.stderr and "Could not fetch rule set" not in proc.stderr:
                problems.append(f"{label}-save: {proc.stderr.strip()}")
            continue
        text, removed = iptables_filtered(proc.stdout)
        if not removed:
            continue
        res = subprocess.run([*restore, "-w", "5"], input=text, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            problems.append(f"{label}-restore: {res.stderr.strip()}")
        else:
            say(f"{label}: removed {removed} mke/KUBE/CNI chains and rules")
    nft = shutil.which("nft", path=path)
    if nft:
        for family, table in NFT_TABLES:
            subprocess.run([nft, "delete", "table", family, table], capture_output=True, timeout=30)
    return problems


def clean_network(paths: WorkerPaths, say: Callable[[str], None] = _noop) -> list[str]:
    """Every network provider's host state (each removes only its own), then the iptables chains."""
    from mke import network

    problems = []
    for provider in network.every():
        problems += provider.cleanup(paths, say)
    problems += clean_iptables(tools_path(paths), say)
    for provider in network.every():
        problems += provider.cleanup_after_iptables(paths, say)
    return problems


# --------------------------------------------------------------------------- cgroups and files


def remove_cgroups(cgroup_root: str, root: Path = CGROUP_ROOT) -> list[str]:
    problems = []
    for top in pod_cgroup_dirs(cgroup_root, root):
        dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [top]
        for d in dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                problems.append(f"rmdir {d}: {e.strerror}")
                break
    rel = cgroup_root.strip("/")
    if rel:
        bases = [root] if (root / "cgroup.controllers").exists() else [m for m in root.iterdir() if m.is_dir()]
        for b in bases:
            with contextlib.suppress(OSError):
                (b / rel).rmdir()
    return problems


def remove_files(paths: WorkerPaths, pod_logs: str, say: Callable[[str], None] = _noop) -> list[str]:
    problems = []
    for rel in WORKER_DIRS:
        d = paths.data_dir / rel
        if not d.exists():
            continue
        still = mounts_under([d])
        if still:  # never delete through a mount point that could not be unmounted
            problems.append(f"still mounted, so {d} was not removed: {', '.join(still[:5])}")
            continue
        shutil.rmtree(d, onerror=lambda f, p, e: problems.append(f"remove {p}: {e[1]}"))
    for pid_file in ("kubelet.pid", "containerd.pid"):
        (paths.run_dir / pid_file).unlink(missing_ok=True)
    problems += remove_pod_logs(Path(pod_logs)) if pod_logs else []
    say(f"removed the worker's files under {paths.data_dir}")
    return problems


def remove_pod_logs(logs: Path) -> list[str]:
    """Remove the pod log dirs kubelet wrote (``<namespace>_<pod>_<uid>``) and nothing else; the
    directory itself only when that leaves it empty, and never one of the host's own."""
    from mke.node.datadir import SYSTEM_DIRS

    if not logs.is_dir():
        return []
    problems: list[str] = []
    for entry in logs.iterdir():
        if entry.is_dir() and not entry.is_symlink() and POD_LOG_DIR.match(entry.name):
            if mounts_under([entry]):
                problems.append(f"still mounted, so {entry} was not removed")
                continue
            shutil.rmtree(entry, onerror=lambda f, p, e: problems.append(f"remove {p}: {e[1]}"))
    if os.path.realpath(logs) not in SYSTEM_DIRS:
        with contextlib.suppress(OSError):
            logs.rmdir()  # only when empty
    return problems


def reset_worker(data_dir: Path, say: Callable[[str], None] = _noop) -> list[str]:
    """Undo everything a worker did on this host; returns the problems (empty: all clean)."""
    paths = WorkerPaths(Path(data_dir).absolute())
    cgroup_root, pod_logs = _kubelet_settings(paths)
    problems = stop_processes(paths, say)
    problems += unmount_all([paths.data_dir] + ([Path(pod_logs)] if pod_logs else []), say)
    problems += clean_network(paths, say)
    problems += remove_cgroups(cgroup_root)
    problems += remove_system_files(paths.host_files_record)
    problems += remove_files(paths, pod_logs, say)
    return problems


def kubelet_settings(data_dir: Path) -> tuple[str, str]:
    """(cgroup root, pod logs dir) the worker in ``data_dir`` ran kubelet with (("/", "") when unknown)."""
    return _kubelet_settings(WorkerPaths(Path(data_dir)))


def leftovers(data_dir: Path, *, cgroup_root: str = "/", pod_logs: str = "") -> list[str]:
    """What a worker left on this host (run after reset_worker; the e2e tests check it is empty)."""
    paths = WorkerPaths(Path(data_dir).absolute())
    out = []
    out += [f"mount {m}" for m in mounts_under([paths.data_dir] + ([Path(pod_logs)] if pod_logs else []))]
    out += [f"process {p} ({' '.join(process.cmdline(p))[:80]})" for p in shim_pids(paths) | component_pids(paths)]
    for d in pod_cgroup_dirs(cgroup_root):
        out.append(f"cgroup {d}")
    from mke import network

    for provider in network.every():
        out += provider.leftovers(paths)
    for label, save, _ in iptables_commands(tools_path(paths)):
        text = subprocess.run(save, capture_output=True, text=True, timeout=60).stdout
        chains = sorted({m.group(1) for m in CHAIN_RE.finditer(text)})
        if chains:
            out.append(f"{label}: {', '.join(chains[:8])}{' ...' if len(chains) > 8 else ''}")
    for rel in WORKER_DIRS:
        if (paths.data_dir / rel).exists():
            out.append(f"dir {paths.data_dir / rel}")
    return out
