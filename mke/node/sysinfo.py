"""What this host offers a controller or a worker, checked without changing anything.

``mke sysinfo`` prints these checks; ``mke server`` and ``mke worker`` run the same ones
first and stop on a FAIL (``--ignore-sysinfo`` goes on anyway). Each check is PASS, WARN
(mke works, but something is worse than it should be, or mke will fix it at start: a
module it loads, a sysctl it sets) or FAIL (a component would not run). Every input is
a path or a value given to ``SysInfo``, so tests can build a host out of files.

Like k0s's ``sysinfo`` (kernel, configuration, cgroups, modules), plus what makes a start
fail later on this kind of host: ports in use, a data dir on overlayfs, no free disk,
an unsynchronised clock (certificates issued "in the future" on another node).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import gzip
import os
import socket
from pathlib import Path

from mke.node import kmod

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
MIN_KERNEL = (4, 19)  # Kubernetes' oldest supported kernel (cgroup v2 needs 4.15+, 5.8+ recommended)
GIB = 1 << 30

# Kernel options every node needs (y or m); the ones after them are WARN when missing.
KERNEL_REQUIRED = ("NAMESPACES", "NET_NS", "PID_NS", "IPC_NS", "UTS_NS", "CGROUPS", "CGROUP_CPUACCT",
                   "CGROUP_DEVICE", "CGROUP_FREEZER", "CGROUP_SCHED", "CPUSETS", "MEMCG", "KEYS", "VETH",
                   "BRIDGE", "BRIDGE_NETFILTER", "NF_NAT", "NETFILTER_XT_MATCH_CONNTRACK", "OVERLAY_FS",
                   "POSIX_MQUEUE")
KERNEL_OPTIONAL = ("USER_NS", "SECCOMP", "CGROUP_PIDS", "CGROUP_BPF", "BLK_CGROUP", "CFS_BANDWIDTH", "IP_SET",
                   "IP_VS", "VXLAN", "NETFILTER_XT_MATCH_COMMENT", "NETFILTER_XT_SET")
# cgroup controllers kubelet and the container runtime need (v2 names; v1 adds devices and freezer)
CGROUP_REQUIRED = ("cpu", "cpuset", "memory", "pids")
CGROUP_V1_REQUIRED = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer")
CGROUP_OPTIONAL = ("hugetlb", "io")
# sysctl -> value mke sets at start (WARN when different: mke changes it)
SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
# what a node cannot run without; any other module a network provider wants is WARN when missing
# (kube-router's ipip, for one, only matters for tunnels between subnets)
REQUIRED_MODULES = ("overlay", "br_netfilter")
OVERLAYFS_MAGIC = 0x794C7630
TMPFS_MAGIC = 0x01021994


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    verdict: str  # PASS | WARN | FAIL
    detail: str = ""

    def line(self) -> str:
        return f"{self.name}: {self.verdict}" + (f" ({self.detail})" if self.detail else "")


@dataclasses.dataclass
class SysInfo:
    """The host as mke sees it; every path is overridable for tests."""

    roles: tuple[str, ...] = ("controller", "worker")
    ports: dict[int, str] = dataclasses.field(default_factory=dict)  # port -> what needs it
    modules: tuple[str, ...] = ("overlay", "br_netfilter")
    data_dir: Path = Path("/var/lib/mke")
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    boot: Path = Path("/boot")
    release: str = dataclasses.field(default_factory=lambda: os.uname().release)
    own_ports_ok: bool = False  # the mke that runs with data_dir holds the ports: in use is fine
    own_pids: frozenset[int] = frozenset()  # components a stopped mke left (mke stops them before starting)

    # -- the checks

    def kernel(self) -> Result:
        nums = []
        for part in self.release.split("-")[0].split(".")[:2]:
            digits = "".join(ch for ch in part if ch.isdigit())
            nums.append(int(digits or 0))
        version = tuple(nums + [0] * (2 - len(nums)))
        if version < MIN_KERNEL:
            return Result("kernel", WARN, f"{self.release} is older than {'.'.join(map(str, MIN_KERNEL))}, the oldest "
                                          "kernel Kubernetes supports")
        return Result("kernel", PASS, self.release)

    def kernel_config(self) -> tuple[Path | None, dict[str, str]]:
        for path in (self.proc / "config.gz", self.boot / f"config-{self.release}",
                     Path("/lib/modules") / self.release / "config"):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace")
            opts = {}
            for line in text.splitlines():
                if line.startswith("CONFIG_") and "=" in line:
                    k, _, v = line.partition("=")
                    opts[k[7:]] = v
            return path, opts
        return None, {}

    def kernel_options(self) -> list[Result]:
        path, opts = self.kernel_config()
        if path is None:
            return [Result("kernel config", WARN, f"not found in {self.proc}/config.gz or {self.boot}/config-"
                                                  f"{self.release}; its options were not checked")]
        out = []
        for name in (*KERNEL_REQUIRED, *KERNEL_OPTIONAL):
            v = opts.get(name)
            if v in ("y", "m"):
                out.append(Result(f"CONFIG_{name}", PASS, "built in" if v == "y" else "module"))
            else:
                out.append(Result(f"CONFIG_{name}", FAIL if name in KERNEL_REQUIRED else WARN,
                                  f"not set in {path}"))
        return out

    def cgroups(self) -> list[Result]:
        root = self.sys / "fs" / "cgroup"
        if (root / "cgroup.controllers").exists():
            have = set((root / "cgroup.controllers").read_text().split())
            out = [Result("cgroups", PASS, "v2 (unified)")]
            required = CGROUP_REQUIRED
        else:
            have = set()
            try:
                for line in (self.proc / "cgroups").read_text().splitlines()[1:]:
                    f = line.split()
                    if len(f) >= 4 and f[3] == "1":
                        have.add(f[0])
            except OSError:
                return [Result("cgroups", FAIL, f"neither {root}/cgroup.controllers nor {self.proc}/cgroups: "
                                                "no cgroup file system is mounted")]
            out = [Result("cgroups", WARN, "v1, which Kubernetes deprecated; boot with "
                                           "systemd.unified_cgroup_hierarchy=1 for v2")]
            required = CGROUP_V1_REQUIRED
        for c in (*required, *CGROUP_OPTIONAL):
            if c in have:
                out.append(Result(f"cgroup controller {c}", PASS))
            else:
                out.append(Result(f"cgroup controller {c}", FAIL if c in required else WARN, "not enabled"))
        return out

    def kernel_modules(self) -> list[Result]:
        tree = kmod.ModuleTree(sys_module=self.sys / "module", release=self.release, proc=self.proc)
        _, opts = self.kernel_config()
        out = []
        for m in self.modules:
            have = kmod.state(m, tree, kernel_options=opts)
            if have == kmod.LOADED:
                out.append(Result(f"module {m}", PASS, "loaded"))
            elif have == kmod.BUILTIN:
                out.append(Result(f"module {m}", PASS, "built in"))
            elif have == kmod.LOADABLE:
                out.append(Result(f"module {m}", PASS, f"not loaded; mke loads it from {tree.root}"))
            else:
                out.append(Result(f"module {m}", FAIL if m in REQUIRED_MODULES else WARN,
                                  f"neither loaded, built in, nor in {tree.root}"))
        return out

    def sysctls(self) -> list[Result]:
        out = []
        for key, want in SYSCTLS.items():
            path = self.proc / "sys" / key.replace(".", "/")
            try:
                have = path.read_text().strip()
            except OSError:
                out.append(Result(f"sysctl {key}", WARN, "not available yet (its module is not loaded); mke loads it"))
                continue
            if have == want:
                out.append(Result(f"sysctl {key}", PASS, have))
            else:
                out.append(Result(f"sysctl {key}", WARN, f"is {have}; mke sets it to {want} at start"))
        return out

    def port_results(self) -> list[Result]:
        out = []
        for port, what in sorted(self.ports.items()):
            if not port_in_use(port):
                out.append(Result(f"port {port}", PASS, f"free ({what})"))
                continue
            if self.own_ports_ok:
                out.append(Result(f"port {port}", PASS, f"in use by the mke running here ({what})"))
                continue
            owners = port_owners(port, self.proc)
            if owners and owners <= self.own_pids:
                out.append(Result(f"port {port}", PASS, f"held by a component a stopped mke left (pid "
                                                        f"{', '.join(map(str, sorted(owners)))}); mke stops it first"))
                continue
            by = ", ".join(f"pid {p} ({comm(p, self.proc)})" for p in sorted(owners)) if owners else "another process"
            out.append(Result(f"port {port}", FAIL, f"in use by {by}: {what} needs it"))
        return out

    def disk_and_memory(self) -> list[Result]:
        out = []
        probe = self.data_dir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        st = os.statvfs(probe)
        free = st.f_bavail * st.f_frsize
        total = st.f_blocks * st.f_frsize or 1
        desc = f"{free / GIB:.1f} GiB free of {total / GIB:.1f} GiB at {probe}"
        if free < GIB:
            out.append(Result("disk", FAIL, desc + "; kubelet evicts every pod below 10%, etcd needs room"))
        elif free < 10 * GIB or free / total < 0.15:
            out.append(Result("disk", WARN, desc + "; kubelet starts evicting pods at 10% free"))
        else:
            out.append(Result("disk", PASS, desc))
        fs = statfs_type(probe)
        if "worker" in self.roles and fs == OVERLAYFS_MAGIC:
            out.append(Result("data dir file system", FAIL, f"{probe} is on overlayfs: containerd's overlay "
                                                            "snapshotter cannot stack on it; use another --data-dir"))
        elif fs == TMPFS_MAGIC:
            out.append(Result("data dir file system", WARN, f"{probe} is on tmpfs: the cluster's state is lost "
                                                            "at reboot"))
        else:
            out.append(Result("data dir file system", PASS, str(probe)))
        mem, total = usable_memory(self.proc), meminfo(self.proc).get("MemTotal", 0)
        need = 1 * GIB if "controller" in self.roles else GIB // 2
        desc = f"{mem / GIB:.1f} GiB" + (f" (its cgroup's limit; the host has {total / GIB:.1f})" if mem < total else "")
        out.append(Result("memory", PASS if mem >= need else WARN,
                          desc if mem >= need else f"{desc}; {need / GIB:g} GiB or more is recommended"))
        swap = meminfo(self.proc).get("SwapTotal", 0)
        if "worker" in self.roles and swap:
            out.append(Result("swap", WARN, f"{swap / GIB:.1f} GiB enabled; kubelet runs with failSwapOn=false "
                                            "and pods do not use it"))
        return out

    def clock(self) -> Result:
        state = clock_state()
        if state is None:
            return Result("clock", WARN, "cannot read the kernel's clock state (adjtimex)")
        if state == 5:  # TIME_ERROR: not synchronised
            return Result("clock", WARN, "not synchronised (no NTP): certificates made on one node may not be "
                                         "valid yet on another; run an NTP client")
        return Result("clock", PASS, "synchronised")

    def limits(self) -> Result:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 65536:
            return Result("open files limit", WARN, f"{hard}: containerd and etcd want 65536 or more "
                                                    "(LimitNOFILE in the service)")
        return Result("open files limit", PASS, f"{soft} (hard {'unlimited' if hard == resource.RLIM_INFINITY else hard})")

    def run(self) -> list[Result]:
        out = [self.kernel(), *self.kernel_options(), *self.cgroups()]
        if "worker" in self.roles:
            out += [*self.kernel_modules(), *self.sysctls()]
        out += [*self.port_results(), *self.disk_and_memory(), self.clock(), self.limits()]
        return out


# -- host probes (small, separate so tests can call them directly)


def port_in_use(port: int) -> bool:
    """Whether a TCP listener (any address, v4 or v6) holds ``port``: try to bind it."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
        finally:
            s.close()
    return False


def port_owners(port: int, proc: Path = Path("/proc")) -> frozenset[int]:
    """Pids holding a listening TCP socket on ``port`` (from /proc/net/tcp{,6} and each process's fds;
    processes this one may not look into are left out)."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return frozenset()
    pids = set()
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            for fd in (d / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    pids.add(int(d.name))
                    break
        except OSError:
            continue
    return frozenset(pids)


def comm(pid: int, proc: Path = Path("/proc")) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def meminfo(proc: Path = Path("/proc")) -> dict[str, int]:
    out = {}
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            k, _, v = line.partition(":")
            f = v.split()
            if f and f[0].isdigit():
                out[k] = int(f[0]) * (1024 if len(f) > 1 and f[1] == "kB" else 1)
    except OSError:
        pass
    return out


def usable_memory(proc: Path = Path("/proc")) -> int:
    """The memory this process may use, in bytes: the host's MemTotal, or less when its memory
    cgroup or an ancestor sets a limit (a container's, a systemd unit's MemoryMax): cgroup v2's
    ``memory.max`` or v1's ``memory.limit_in_bytes``, found through /proc/self/mountinfo. 0 when
    /proc/meminfo cannot be read."""
    limit = meminfo(proc).get("MemTotal", 0)
    try:
        groups = (proc / "self" / "cgroup").read_text().splitlines()
        mounts = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return limit
    paths: dict[str, str] = {}  # "v2" or "v1" -> this process's cgroup path in that hierarchy
    for line in groups:
        ident, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if ident == "0" and not controllers:
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    for line in mounts:
        # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
        fields, _, tail = line.partition(" - ")
        f, t = fields.split(), tail.split()
        if len(f) < 5 or len(t) < 3:
            continue
        if t[0] == "cgroup2" and "v2" in paths:
            version, name = "v2", "memory.max"
        elif t[0] == "cgroup" and "memory" in t[2].split(",") and "v1" in paths:
            version, name = "v1", "memory.limit_in_bytes"
        else:
            continue
        root, mountpoint, path = f[3], Path(f[4].replace("\\040", " ")), paths.pop(version)
        rel = os.path.relpath(path, root) if root == "/" or f"{path}/".startswith(f"{root}/") else path.lstrip("/")
        d = mountpoint / rel if rel != "." else mountpoint
        while True:
            try:
                value = (d / name).read_text().strip()
            except OSError:
                value = ""
            if value.isdigit() and int(value) < 1 << 60:  # v1's "no limit" is a huge number
                limit = min(limit, int(value)) if limit else int(value)
            if d == mountpoint or not d.is_relative_to(mountpoint):
                break
            d = d.parent
    return limit


def statfs_type(path: Path) -> int | None:
    """f_type of the file system holding ``path`` (statfs(2); os.statvfs does not give it)."""
    buf = ctypes.create_string_buffer(120)  # struct statfs is 120 bytes on 64-bit Linux; f_type comes first
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.statfs(os.fsencode(path), buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return int.from_bytes(buf.raw[:8], "little") if ctypes.sizeof(ctypes.c_long) == 8 else \
        int.from_bytes(buf.raw[:4], "little")


def clock_state() -> int | None:
    """adjtimex(2)'s return value with no change requested: 0..4 synchronised states, 5 TIME_ERROR."""
    buf = ctypes.create_string_buffer(256)  # struct timex (208 bytes on 64-bit); modes=0: read only
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    return None if rc < 0 else rc


def verdict(results: list[Result]) -> str:
    return FAIL if any(r.verdict == FAIL for r in results) else WARN if any(r.verdict == WARN for r in results) else PASS
