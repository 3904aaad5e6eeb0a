"""The cluster file of ``mke cluster`` (YAML), parsed into frozen keyword-only dataclasses.

Every error is one line naming the file and the field (``cluster.yaml: hosts[2].role: ...``),
all of them at once, unknown keys with a "did you mean" hint, as mke.yaml's (mke/config.py);
the ``config`` section *is* an mke.yaml and is checked by mke.config itself. docs/cluster.md
is the reference; ``example()`` is a file that loads.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mke.errors import ConfigError, UsageError

ROLES = ("controller", "worker", "controller+worker")
DEFAULT_DATA_DIR = "/var/lib/mke"
DEFAULT_MKE_PATH = "/usr/local/bin/mke"
INITS = ("service", "detached")
# flags mke cluster sets itself on `mke server|worker`: the field to use instead
MANAGED_FLAGS = {"data_dir": "dataDir", "token": "(mke cluster makes the tokens)",
                 "token_file": "(mke cluster makes the tokens)", "config": "the top-level config section",
                 "name": "name", "enable_worker": "role: controller+worker"}

_HOST_RE = re.compile(r"(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*")
_NODE_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class SSHSettings:
    """How to reach a host: user, port, private key, and the known_hosts file its key is checked against."""

    user: str = "root"
    port: int = 22
    key_path: Path | None = None  # None: the SSH agent and ~/.ssh/id_* (asyncssh's defaults)
    known_hosts: Path = field(default_factory=lambda: Path("~/.ssh/known_hosts").expanduser())


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    index: int
    address: str
    role: str
    name: str  # the node name; "" = the host's own (its host name)
    ssh: SSHSettings
    data_dir: str
    flags: tuple[str, ...]
    init: str  # service (systemd or OpenRC: mke install) or detached (no service manager)

    @property
    def controller(self) -> bool:
        return self.role in ("controller", "controller+worker")

    @property
    def worker(self) -> bool:
        return self.role in ("worker", "controller+worker")

    @property
    def service_role(self) -> str:
        """The mke service this host runs: mke-controller (with --enable-worker for both) or mke-worker."""
        return "controller" if self.controller else "worker"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.address})" if self.name else self.address

    @property
    def config_path(self) -> str:
        """Where the cluster's mke.yaml goes on a controller (inside the data dir: mke reset removes it)."""
        return str(PurePosixPath(self.data_dir) / "cluster" / "mke.yaml")

    @property
    def token_path(self) -> str:
        """The join token's file (0600), read by the service at each start until the node has joined."""
        return str(PurePosixPath(self.data_dir) / "cluster" / "join-token")


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    source: str
    hosts: tuple[HostSpec, ...]
    config: dict[str, Any]  # the cluster's mke.yaml, as given (checked by mke.config)
    mke_file: Path | None  # None: the running executable
    mke_path: str
    airgap_bundles: tuple[Path, ...]
    workers_in_parallel: int

    @property
    def controllers(self) -> list[HostSpec]:
        return [h for h in self.hosts if h.controller]

    @property
    def workers(self) -> list[HostSpec]:
        return [h for h in self.hosts if not h.controller]

    def host(self, address_or_name: str) -> HostSpec:
        for h in self.hosts:
            if address_or_name in (h.address, h.name):
                return h
        raise UsageError(f"{address_or_name}: no such host in {self.source} (hosts: "
                         f"{', '.join(h.name or h.address for h in self.hosts)})")


def _hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Errors:
    """Every error of one file, each a line ``<field>: <what>``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.lines.append(f"{where}: {msg}")

    def keys(self, data: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.add(where or "(top level)", f"expected a mapping, got {type(data).__name__}")
            return {}
        for k in data:
            if k not in allowed:
                self.add(f"{where}.{k}" if where else str(k), f"unknown key{_hint(k, allowed)}")
        for k in required:
            if k not in data:
                self.add(f"{where}.{k}" if where else k, "missing: it is required")
        return data


def _string(errs: _Errors, v: Any, where: str) -> str | None:
    if not isinstance(v, str) or not v:
        errs.add(where, f"expected a non-empty string, got {v!r}")
        return None
    if _CONTROL.search(v):
        errs.add(where, f"{v!r} holds a control character")
        return None
    return v


def _address(errs: _Errors, v: Any, where: str) -> str | None:
    s = _string(errs, v, where)
    if s is None:
        return None
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        if not _HOST_RE.fullmatch(s):
            errs.add(where, f"{s!r} is neither an IP address nor a DNS name")
            return None
        return s
    if ip.is_unspecified or ip.is_multicast:
        errs.add(where, f"{s} is not a host's address")
        return None
    return s


def _port(errs: _Errors, v: Any, where: str) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        errs.add(where, f"expected a port number 1-65535, got {v!r}")
        return None
    return v


def _local_path(errs: _Errors, v: Any, where: str, base: Path, *, must_exist: bool) -> Path | None:
    s = _string(errs, v, where)
    if s is None:
        return None
    p = Path(s).expanduser()
    p = p if p.is_absolute() else base / p
    if must_exist and not p.is_file():
        errs.add(where, f"{p}: {'not a file' if p.exists() else 'no such file'}")
        return None
    return p


def _remote_path(errs: _Errors, v: Any, where: str) -> str | None:
    s = _string(errs, v, where)
    if s is None:
        return None
    p = PurePosixPath(s)
    if not p.is_absolute() or ".." in p.parts or str(p) in ("/", "/usr", "/var", "/var/lib", "/etc"):
        errs.add(where, f"{s!r}: give an absolute path of its own (not / or a system directory, no ..)")
        return None
    if not re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", s):
        errs.add(where, f"{s!r}: use letters, digits and _@%+=:,./- only (it goes into service files)")
        return None
    return str(p)


def _ssh(errs: _Errors, data: Any, where: str, base: Path, defaults: SSHSettings) -> SSHSettings:
    d = errs.keys(data, where, ("user", "port", "keyPath", "knownHosts"))
    kw: dict[str, Any] = {}
    if "user" in d:
        kw["user"] = _string(errs, d["user"], f"{where}.user")
    if "port" in d:
        kw["port"] = _port(errs, d["port"], f"{where}.port")
    if "keyPath" in d:
        kw["key_path"] = _local_path(errs, d["keyPath"], f"{where}.keyPath", base, must_exist=True)
    if "knownHosts" in d:
        kw["known_hosts"] = _local_path(errs, d["knownHosts"], f"{where}.knownHosts", base, must_exist=False)
    kw = {k: v for k, v in kw.items() if v is not None}
    return SSHSettings(**{**defaults.__dict__, **kw})


class _FlagParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def role_parser(role: str) -> argparse.ArgumentParser:
    """The parser of the command a host's service runs (mke server for controllers, mke worker)."""
    import importlib

    command = "server" if role in ("controller", "controller+worker") else "worker"
    p = _FlagParser(prog=f"mke {command}", add_help=False)
    importlib.import_module(f"mke.commands.{command}").add_arguments(p)
    return p


def check_flags(flags: list[str], role: str) -> str | None:
    """Why ``flags`` cannot be given to this role's ``mke server|worker`` (None: they can)."""
    p = role_parser(role)
    try:
        ns = p.parse_args(flags)
    except ValueError as e:
        return f"{e} (these are flags of `{p.prog}`)"
    for dest, use in MANAGED_FLAGS.items():
        default = p.get_default(dest)
        if getattr(ns, dest, default) != default:
            return f"mke cluster sets {'the token' if dest == 'token' else '--' + dest.replace('_', '-')} itself: use {use}"
    return None


def _host(errs: _Errors, data: Any, i: int, base: Path, ssh: SSHSettings) -> HostSpec | None:
    where = f"hosts[{i}]"
    d = errs.keys(data, where, ("address", "role", "name", "ssh", "dataDir", "flags", "init"),
                  required=("address", "role"))
    before = len(errs.lines)
    address = _address(errs, d.get("address"), f"{where}.address") if "address" in d else None
    role = d.get("role")
    if "role" in d and role not in ROLES:
        errs.add(f"{where}.role", f"{role!r} is not one of {', '.join(ROLES)}{_hint(role, ROLES)}")
    name = ""
    if "name" in d:
        name = _string(errs, d["name"], f"{where}.name") or ""
        if name and (len(name) > 253 or not _NODE_RE.fullmatch(name)):
            errs.add(f"{where}.name", f"{name!r}: a node name is a lower-case DNS name (a-z 0-9 - .)")
    init = d.get("init", "service")
    if init not in INITS:
        errs.add(f"{where}.init", f"{init!r} is not one of {', '.join(INITS)}{_hint(init, INITS)}")
    data_dir = _remote_path(errs, d["dataDir"], f"{where}.dataDir") if "dataDir" in d else DEFAULT_DATA_DIR
    flags = d.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        errs.add(f"{where}.flags", f"expected a list of strings such as [\"--cgroup-root=/mke\"], got {flags!r}")
        flags = []
    elif role in ROLES:
        why = check_flags(flags, role)
        if why:
            errs.add(f"{where}.flags", why)
    host_ssh = _ssh(errs, d.get("ssh"), f"{where}.ssh", base, ssh) if "ssh" in d else ssh
    if len(errs.lines) > before:
        return None
    return HostSpec(index=i, address=str(address), role=str(role), name=name, ssh=host_ssh,
                    data_dir=str(data_dir), flags=tuple(flags), init=str(init))


def parse_cluster(data: Any, source: str, base: Path) -> ClusterSpec:
    """Validate an already-read cluster file; every error is one line ``<source>: <field>: <what>``."""
    from mke.config import parse_config

    errs = _Errors()
    top = errs.keys(data, "", ("ssh", "hosts", "config", "mke", "airgapBundles", "workersInParallel"),
                    required=("hosts",))
    ssh = _ssh(errs, top.get("ssh"), "ssh", base, SSHSettings())
    hosts: list[HostSpec] = []
    raw_hosts = top.get("hosts")
    if "hosts" in top and (not isinstance(raw_hosts, list) or not raw_hosts):
        errs.add("hosts", "expected a list of hosts (address, role, ...), at least one controller")
    elif isinstance(raw_hosts, list):
        for i, h in enumerate(raw_hosts):
            spec = _host(errs, h, i, base, ssh)
            if spec is not None:
                hosts.append(spec)
        if len(hosts) == len(raw_hosts):
            _cross_check_hosts(errs, hosts)
    mke = errs.keys(top.get("mke"), "mke", ("file", "path"))
    mke_file = _local_path(errs, mke["file"], "mke.file", base, must_exist=True) if "file" in mke else None
    mke_path = _remote_path(errs, mke["path"], "mke.path") if "path" in mke else DEFAULT_MKE_PATH
    bundles_raw = top.get("airgapBundles", [])
    bundles: list[Path] = []
    if not isinstance(bundles_raw, list):
        errs.add("airgapBundles", f"expected a list of files (mke airgap bundles), got {bundles_raw!r}")
    else:
        for i, b in enumerate(bundles_raw):
            p = _local_path(errs, b, f"airgapBundles[{i}]", base, must_exist=True)
            if p is not None:
                bundles.append(p)
    parallel = top.get("workersInParallel", 5)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 100:
        errs.add("workersInParallel", f"expected a number of workers joined at once, 1-100, got {parallel!r}")
    config = top.get("config") or {}
    if not isinstance(config, dict):
        errs.add("config", f"expected a mapping (the cluster's mke.yaml), got {type(config).__name__}")
        config = {}
    else:
        try:
            cfg = parse_config(config, "config")
        except ConfigError as e:
            errs.lines += [line.replace("config: ", "config.", 1) for line in str(e).splitlines()]
        else:
            if cfg.api.address and len([h for h in hosts if h.controller]) > 1:
                errs.add("config.api.address", "leave it empty: each controller advertises its own address "
                                               "(hosts[].address when it is an IP address, else its first one)")
    if errs.lines:
        raise ConfigError("\n".join(f"{source}: {line}" for line in errs.lines))
    return ClusterSpec(source=source, hosts=tuple(hosts), config=config, mke_file=mke_file, mke_path=str(mke_path),
                       airgap_bundles=tuple(bundles), workers_in_parallel=int(parallel))


def _cross_check_hosts(errs: _Errors, hosts: list[HostSpec]) -> None:
    seen: dict[tuple[str, int], int] = {}
    names: dict[str, int] = {}
    for h in hosts:
        key = (h.address, h.ssh.port)
        if key in seen:
            errs.add(f"hosts[{h.index}].address", f"{h.address} port {h.ssh.port} is hosts[{seen[key]}] already")
        seen.setdefault(key, h.index)
        if h.name:
            if h.name in names:
                errs.add(f"hosts[{h.index}].name", f"{h.name!r} is the name of hosts[{names[h.name]}] already")
            names.setdefault(h.name, h.index)
    if not any(h.controller for h in hosts):
        errs.add("hosts", "no controller: give at least one host role: controller (or controller+worker)")


def load_cluster(path: Path) -> ClusterSpec:
    """Read and validate the cluster file at ``path`` (relative paths in it are from its directory)."""
    from mke.config import read_yaml

    path = Path(path)
    return parse_cluster(read_yaml(path, "the cluster file"), str(path), path.absolute().parent)


def example() -> str:
    """A cluster file that loads (docs/cluster.md shows it)."""
    return EXAMPLE


EXAMPLE = """\
# mke cluster apply -c cluster.yaml
ssh:                      # defaults for every host (each host may override them under ssh:)
  user: root
  port: 22
  keyPath: ~/.ssh/id_ed25519
  knownHosts: ~/.ssh/known_hosts
mke:
  path: /usr/local/bin/mke   # where the file goes on each host (mke.file: which file; default: this one)
hosts:
  - {address: 10.0.0.1, role: controller}
  - {address: 10.0.0.2, role: controller}
  - {address: 10.0.0.3, role: controller}
  - {address: 10.0.0.11, role: worker, flags: ["--label=tier=web"]}
  - {address: 10.0.0.12, role: worker, name: w2, dataDir: /srv/mke}
config:                   # the cluster's mke.yaml (mke config create prints every key)
  storage: {type: etcd}
"""

