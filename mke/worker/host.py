"""Facts about the host a worker runs on, and the kernel prerequisites mke can set.

``detect_cgroups()``: cgroup v2 (unified) or v1, and the driver both containerd and
kubelet must use: ``systemd`` when systemd is the init system, else ``cgroupfs``. On
cgroup v1 kubelet 1.35+ refuses to start unless ``failCgroupV1: false``; mke sets it
and warns, since v1 support is deprecated.

``Prerequisites``: kernel modules (overlay, br_netfilter) and sysctls (IP forwarding,
bridge netfilter). Each is checked, set when missing and possible (mke.node.kmod, writing
/proc/sys), and reported as ok / set / missing with what to do, one line each.
Sysctls under net.* belong to the network namespace mke runs in.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from mke.errors import KernelModuleError
from mke.node import kmod

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP2_SUPER_MAGIC = 0x63677270


@dataclasses.dataclass(frozen=True, kw_only=True)
class CgroupInfo:
    version: int  # 1 or 2
    driver: str  # "systemd" | "cgroupfs"

    @property
    def warning(self) -> str | None:
        if self.version == 1:
            return ("this host uses cgroup v1, which Kubernetes deprecated: kubelet runs with failCgroupV1=false; "
                    "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2) when you can")
        return None


def detect_cgroups(root: Path = CGROUP_ROOT, *, systemd_dir: Path = Path("/run/systemd/system")) -> CgroupInfo:
    version = 2 if (root / "cgroup.controllers").exists() else 1
    # systemd is the init system when /run/systemd/system exists (sd_booted()).
    driver = "systemd" if systemd_dir.is_dir() else "cgroupfs"
    return CgroupInfo(version=version, driver=driver)


CAP_SYS_RESOURCE = 24


def has_capability(cap: int, status: Path = Path("/proc/self/status")) -> bool:
    """Whether this process has ``cap`` in its effective set (containers and sandboxes may drop some)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError, IndexError):
        pass
    return True


def swap_enabled(proc_swaps: Path = Path("/proc/swaps")) -> bool:
    try:
        return len(proc_swaps.read_text().strip().splitlines()) > 1
    except OSError:
        return False


def host_resolv_conf(etc: Path = Path("/etc/resolv.conf"),
                     resolved: Path = Path("/run/systemd/resolve/resolv.conf")) -> str:
    """The resolv.conf kubelet gives pods: systemd-resolved's real one when the stub (127.0.0.53)
    is in use; "" on a host without one (kubelet then gives pods only the cluster's DNS, where
    a missing file would make it fail every pod sandbox)."""
    try:
        text = etc.read_text()
    except FileNotFoundError:
        return ""
    except OSError:
        return str(etc)
    if "127.0.0.53" in text and resolved.exists():
        return str(resolved)
    return str(etc)


# --------------------------------------------------------------------------- prerequisites


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    status: str  # ok | set | missing
    detail: str = ""

    def line(self) -> str:
        return f"{self.name}: {self.status}" + (f" ({self.detail})" if self.detail else "")


MODULES = ("overlay", "br_netfilter")
# sysctl -> (wanted value, module that provides it, required)
SYSCTLS = {
    "net.ipv4.ip_forward": ("1", None, True),
    "net.bridge.bridge-nf-call-iptables": ("1", "br_netfilter", True),
    "net.bridge.bridge-nf-call-ip6tables": ("1", "br_netfilter", False),
    "net.ipv6.conf.all.forwarding": ("1", None, False),
}

# What kubelet wants of the kernel (k8s.io/kubernetes pkg/kubelet/cm/container_manager_linux.go
# setupKernelTunables; values from k8s.io/component-helpers/node/util/sysctl). Without
# protectKernelDefaults kubelet changes them itself; mke sets them first, as kubelet would,
# says so, and runs kubelet with protectKernelDefaults: true (CIS 4.2.6), so that kubelet
# only checks them (and refuses to start should something change them back).
KUBELET_SYSCTLS = {
    "vm.overcommit_memory": "1",
    "vm.panic_on_oom": "0",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "kernel.keys.root_maxkeys": "1000000",
    "kernel.keys.root_maxbytes": "25000000",
}


def kernel_defaults_match(checks: list[Check]) -> bool:
    """Every sysctl kubelet checks has its value (read or set by ``Prerequisites.ensure``):
    kubelet can run with protectKernelDefaults: true."""
    done = {c.name for c in checks if c.status in ("ok", "set")}
    return all(f"sysctl {key}" in done for key in KUBELET_SYSCTLS)


class Prerequisites:
    """Check and set what the kernel must provide; ``proc``/``sys`` are overridable for tests."""

    def __init__(self, *, proc: Path = Path("/proc"), sys: Path = Path("/sys"), modules: tuple[str, ...] = MODULES,
                 load_module: Callable[[str], str] | None = None) -> None:
        self.proc = proc
        self.sys = sys
        self.modules = tuple(dict.fromkeys(modules))
        self._tree = kmod.ModuleTree(sys_module=sys / "module", proc=proc)
        self._load = load_module or (lambda m: kmod.ensure(m, tree=self._tree))

    def sysctl_path(self, key: str) -> Path:
        return self.proc / "sys" / key.replace(".", "/")

    def ensure(self) -> list[Check]:
        checks: list[Check] = []
        for m in self.modules:
            if kmod.present(m, self._tree):
                checks.append(Check(name=f"module {m}", status="ok"))
                continue
            try:
                how = self._load(m)
            except KernelModuleError as e:
                checks.append(Check(name=f"module {m}", status="missing", detail=str(e)))
                continue
            checks.append(Check(name=f"module {m}", status="ok" if how in ("loaded", "builtin") else "set",
                                detail="" if how in ("loaded", "builtin") else "loaded by mke"))
        wanted = {**SYSCTLS, **{k: (v, None, False) for k, v in KUBELET_SYSCTLS.items()}}
        for key, (want, module, required) in wanted.items():
            path = self.sysctl_path(key)
            try:
                have = path.read_text().strip()
            except FileNotFoundError:
                if required or key in KUBELET_SYSCTLS:
                    why = f"needs the {module} module" if module else "not available in this kernel"
                    checks.append(Check(name=f"sysctl {key}", status="missing", detail=why))
                continue
            except OSError as e:
                checks.append(Check(name=f"sysctl {key}", status="missing", detail=f"cannot read: {e.strerror}"))
                continue
            if have == want:
                checks.append(Check(name=f"sysctl {key}", status="ok"))
                continue
            try:
                path.write_text(want)
                checks.append(Check(name=f"sysctl {key}", status="set", detail=f"was {have}"))
            except OSError as e:
                checks.append(Check(name=f"sysctl {key}", status="missing",
                                    detail=f"is {have}, cannot set it to {want}: {e.strerror}; "
                                           f"set it with sysctl -w {key}={want}"))
        return checks


def missing(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == "missing"]


# --------------------------------------------------------------------------- files a kernel-only host lacks

# What a kernel-only host lacks and the components need, made only where missing:
# - /etc/passwd (and /etc/group): kubelet looks its user up for user namespaces (locked on in
#   Kubernetes 1.36): a missing file is fatal, an unknown user is not;
# - /etc/hosts: containerd copies it into every pod sandbox;
# - /etc/resolv.conf: containerd copies it for pods without DNS settings, and kubelet gives it
#   to pods with dnsPolicy Default (CoreDNS forwards to it). With no nameserver known, the
#   one k3s falls back to as well; an air-gapped cluster still resolves its own names.
SYSTEM_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
    "etc/group": "root:x:0:\nnobody:x:65534:\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": "# written by mke: this host had no resolv.conf\nnameserver 8.8.8.8\n",
}


def ensure_system_files(record: Path, root: Path = Path("/"),
                        extra: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """Create the ``SYSTEM_FILES`` (and ``extra``: the network provider's) this host lacks, and
    note each (path and content digest) in ``record`` so that ``mke reset`` removes exactly
    those; never touches a file that exists."""
    import hashlib

    from mke.node.files import write_file_atomic

    try:
        made: dict[str, str] = json.loads(record.read_text())
    except (OSError, ValueError):
        made = {}
    created = []
    for rel, text in (*SYSTEM_FILES.items(), *extra):
        path = root / rel
        if path.exists() or path.is_symlink():
            continue
        missing_dirs = [d for d in reversed(path.relative_to(root).parents) if str(d) != "." and not (root / d).exists()]
        for d in missing_dirs:
            (root / d).mkdir(mode=0o755)
            made[str(root / d)] = "dir"
        write_file_atomic(path, text.encode(), 0o644)
        made[str(path)] = hashlib.sha256(text.encode()).hexdigest()
        created.append(str(path))
    if created:
        write_file_atomic(record, json.dumps(made, indent=1, sort_keys=True).encode(), 0o600)
    return created


def remove_system_files(record: Path) -> list[str]:
    """Remove what ``ensure_system_files`` created and nobody changed since; returns the problems."""
    import hashlib

    try:
        made: dict[str, str] = json.loads(record.read_text())
    except (OSError, ValueError):
        return []
    problems = []
    # files first, then their dirs, deepest first
    for path, digest in sorted(made.items(), key=lambda kv: (kv[1] == "dir", -kv[0].count("/"))):
        p = Path(path)
        try:
            if digest == "dir":
                p.rmdir()  # only when empty: something else may have put files there
            elif hashlib.sha256(p.read_bytes()).hexdigest() == digest:
                p.unlink()
            else:
                problems.append(f"{p} changed since mke created it; left in place")
        except FileNotFoundError:
            pass
        except OSError as e:
            if digest != "dir":
                problems.append(f"remove {p}: {e.strerror}")
    record.unlink(missing_ok=True)
    return problems