"""mke.yaml: the cluster configuration, parsed into frozen keyword-only dataclasses.

Every section is a dataclass whose fields carry their YAML key (camelCase) in the
field metadata. ``load_config`` checks each value where it is read, so an error names
the file and the dotted field (``mke.yaml: network.podCIDR: ...``); unknown keys are
errors with a "did you mean" hint. ``default_config()`` is what ``mke config create``
prints, and ``config_to_dict`` is its inverse, so create → validate round-trips.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mke import network, storage
from mke.errors import ConfigError


def _key(name: str, check: Callable[[Any, str], Any] | None = None, *, doc: str = "", **kw: Any) -> Any:
    """A dataclass field bound to YAML key ``name``; ``check(value, where)`` validates it; ``doc`` is
    its line in docs/configuration.md (mke config reference)."""
    return field(metadata={"key": name, "check": check, "doc": doc}, **kw)


# ---------------------------------------------------------------- value checks
# Each takes the raw YAML value and the dotted path, returns the parsed value or raises.


def _fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _fail(where, f"expected a string, got {type(v).__name__} {v!r}")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, f"expected true or false, got {v!r}")
    return v


def _port(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        raise _fail(where, f"expected a port number 1-65535, got {v!r}")
    return v


def _ip_or_empty(v: Any, where: str) -> str:
    s = _str(v, where)
    if s:
        try:
            ipaddress.ip_address(s)
        except ValueError:
            raise _fail(where, f"{s!r} is not an IP address (leave it empty to use the host's first address)") from None
    return s


def _advertised_ip_or_empty(v: Any, where: str) -> str:
    """An address other hosts reach this one at: never loopback, unspecified or multicast."""
    s = _ip_or_empty(v, where)
    if s:
        ip = ipaddress.ip_address(s)
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
            kind = "loopback" if ip.is_loopback else "unspecified" if ip.is_unspecified else "multicast"
            raise _fail(where, f"{s} is a {kind} address, which other hosts cannot reach; give this host's own "
                               "address (or leave it empty to use its first one)")
    return s


_HOST_RE = re.compile(r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")


def _host(v: Any, where: str) -> str:
    s = _str(v, where)
    try:
        ipaddress.ip_address(s)
        return s
    except ValueError:
        pass
    if not _HOST_RE.match(s):
        raise _fail(where, f"{s!r} is neither an IP address nor a DNS name")
    return s


def _host_or_empty(v: Any, where: str) -> str:
    return _host(v, where) if _str(v, where) else ""


def _hosts(v: Any, where: str) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise _fail(where, f"expected a list of addresses or DNS names, got {v!r}")
    return tuple(_host(x, f"{where}[{i}]") for i, x in enumerate(v))


def _cidr(v: Any, where: str) -> str:
    s = _str(v, where)
    try:
        net = ipaddress.ip_network(s, strict=True)
    except ValueError as e:
        raise _fail(where, f"{s!r} is not a network in CIDR notation such as 10.244.0.0/16 ({e})") from None
    if net.num_addresses < 16:
        raise _fail(where, f"{s} is too small (needs at least /28)")
    return s


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def check(v: Any, where: str) -> str:
        s = _str(v, where)
        if s not in choices:
            raise _fail(where, f"{s!r} is not one of {', '.join(choices)}{_hint(s, choices)}")
        return s

    return check


_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def _user_name(v: Any, where: str) -> str:
    from mke.node.sysuser import NAME_RE

    s = _str(v, where)
    if not NAME_RE.match(s):
        raise _fail(where, f"{s!r} is not a user name (lower-case letters, digits, _ and -, 32 at most; "
                           "root runs etcd as root)")
    return s


def _domain(v: Any, where: str) -> str:
    s = _str(v, where)
    if not _DOMAIN_RE.match(s):
        raise _fail(where, f"{s!r} is not a DNS domain such as cluster.local")
    return s


_IMAGE_RE = re.compile(r"^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")


def _image(v: Any, where: str) -> str:
    s = _str(v, where)
    if ":" not in s.rsplit("/", 1)[-1] and "@" not in s:
        raise _fail(where, f"{s!r} has no tag or digest; pin it (e.g. {s}:v1.0.0)")
    if not _IMAGE_RE.match(s):
        raise _fail(where, f"{s!r} is not an image reference such as registry.k8s.io/pause:3.10.1")
    return s


def _registry(v: Any, where: str) -> str:
    s = _str(v, where)
    if s and not re.match(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$", s):
        raise _fail(where, f"{s!r} is not a registry host[/path] such as registry.example.com:5000/mirror")
    return s


_FLAG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _per_component(v: Any, where: str, what: str, key: str,
                   entry: Callable[[Any, Any, str], tuple[str, str]]) -> Mapping[str, Mapping[str, str]]:
    """extraArgs/extraEnv: component -> {``key`` -> value}, each pair checked by ``entry``."""
    from mke.components import supervised_names

    if not isinstance(v, dict):
        raise _fail(where, f"expected a mapping of component name to {what}, got {v!r}")
    out: dict[str, dict[str, str]] = {}
    names = supervised_names()
    for comp, given in v.items():
        w = f"{where}.{comp}"
        if comp not in names:
            raise _fail(w, f"unknown component{_hint(str(comp), names)}; one of {', '.join(names)}")
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise _fail(w, f"expected a mapping of {key} to value, got {given!r}")
        out[comp] = dict(entry(k, val, f"{w}.{k}") for k, val in given.items())
    return out


def _flag(flag: Any, val: Any, where: str) -> tuple[str, str]:
    if not isinstance(flag, str) or not _FLAG_RE.match(flag.lstrip("-")):
        raise _fail(where, "flag names are written without leading dashes, e.g. v: '2'")
    if isinstance(val, bool):
        val = "true" if val else "false"
    if not isinstance(val, (str, int, float)):
        raise _fail(where, f"expected a scalar flag value, got {val!r}")
    return flag.lstrip("-"), str(val)


_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_var(name: Any, val: Any, where: str) -> tuple[str, str]:
    if not isinstance(name, str) or not _ENV_RE.match(name):
        raise _fail(where, "not an environment variable name (letters, digits and _, e.g. GOGC: '100')")
    if isinstance(val, bool) or not isinstance(val, (str, int, float)):
        raise _fail(where, f"expected a string or number, got {val!r}")
    return name, str(val)


def _extra_args(v: Any, where: str) -> Mapping[str, Mapping[str, str]]:
    return _per_component(v, where, "flags", "flag name", _flag)


def _extra_env(v: Any, where: str) -> Mapping[str, Mapping[str, str]]:
    return _per_component(v, where, "environment variables", "variable name", _env_var)


# ---------------------------------------------------------------- registries (per node)
# Keys are registry names as image references spell them (host[:port]); "*" (mirrors only)
# means every registry without its own entry (containerd's _default).

_REGISTRY_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$")


def _registry_name(v: Any, where: str, *, wildcard: bool) -> str:
    if not isinstance(v, str):
        raise _fail(where, f"expected a registry name such as registry.k8s.io, got {type(v).__name__} {v!r}")
    if v == "*" and wildcard:
        return v
    if "://" in v or "/" in v:
        raise _fail(where, f"{v!r}: a registry name is host[:port] as image references spell it (such as "
                           "registry.k8s.io or 10.0.0.1:5000), not a URL or a path")
    if v != v.lower():
        raise _fail(where, f"{v!r}: registry names are lowercase, as in image references")
    m = _REGISTRY_NAME_RE.match(v)
    if not m or (m.group(4) and not 1 <= int(m.group(4)[1:]) <= 65535):
        extra = ' or "*" (every other registry)' if wildcard else ""
        raise _fail(where, f"{v!r} is not a registry name host[:port]{extra}")
    return v


def endpoint_url(v: Any, where: str) -> str:
    """A mirror endpoint: http(s)://host[:port][/path], https when no scheme is given."""
    import urllib.parse

    s = _str(v, where).strip()
    if not s:
        raise _fail(where, "empty endpoint")
    url = s if "://" in s else f"https://{s}"
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https"):
        raise _fail(where, f"{s!r}: the scheme must be https:// (the default) or http:// (plain HTTP)")
    if u.username is not None or u.password is not None:
        raise _fail(where, f"{u.scheme}://...@{u.hostname}: credentials do not belong in an endpoint URL "
                           "(mke would write them to disk); use an imagePullSecret")
    if u.query or u.fragment:
        raise _fail(where, f"{s!r}: an endpoint has no query or fragment")
    try:
        port = u.port
    except ValueError:
        raise _fail(where, f"{s!r}: the port is not a number 1-65535") from None
    if not u.hostname or port == 0:
        raise _fail(where, f"{s!r} is not an endpoint URL such as https://mirror.example.com or http://10.0.0.1:5000")
    _host(u.hostname, where)
    path = u.path.rstrip("/")
    return f"{u.scheme}://{u.netloc}{path}"


def _endpoints(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise _fail(where, f"expected a list of endpoint URLs such as [https://mirror.example.com], got {v!r}")
    out = tuple(endpoint_url(x, f"{where}[{i}]") for i, x in enumerate(v))
    for i, e in enumerate(out):
        if e in out[:i]:
            raise _fail(f"{where}[{i}]", f"{e} is listed twice")
    return out


def _pem_file(marker: str, what: str) -> Callable[[Any, str], str]:
    def check(v: Any, where: str) -> str:
        s = _str(v, where)
        if not s:
            return s
        path = Path(s)
        if not path.is_absolute():
            raise _fail(where, f"{s!r}: give an absolute path (containerd reads it on every pull)")
        try:
            text = path.read_bytes()
        except IsADirectoryError:
            raise _fail(where, f"{s}: is a directory, not a {what} file") from None
        except OSError as e:
            raise _fail(where, f"{s}: cannot read it: {e.strerror}") from None
        if marker.encode() not in text:
            raise _fail(where, f"{s}: not a PEM {what} (no '-----BEGIN {marker}')")
        return s

    return check


def _mapping_of(cls: type, *, wildcard: bool, refuse: Mapping[str, str]) -> Callable[[Any, str], Mapping[str, Any]]:
    """host -> section ``cls``; a key in ``refuse`` is an error with that explanation."""

    def check(v: Any, where: str) -> Mapping[str, Any]:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise _fail(where, f"expected a mapping of registry name to settings, got {v!r}")
        out = {}
        for name, section in v.items():
            w = f"{where}[{name}]"
            host = _registry_name(name, w, wildcard=wildcard)
            if isinstance(section, dict):
                for key, why in refuse.items():
                    if key in section:
                        raise _fail(f"{w}.{key}", why)
            out[host] = _parse_section(cls, section, w)
        return out

    return check


_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _namespaces(v: Any, where: str) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise _fail(where, f"expected a list of namespace names, got {v!r}")
    out: list[str] = []
    for i, x in enumerate(v):
        s = _str(x, f"{where}[{i}]")
        if not _LABEL_RE.match(s):
            raise _fail(f"{where}[{i}]", f"{s!r} is not a namespace name (lower-case letters, digits, '-'; "
                                         "at most 63)")
        if s in out:
            raise _fail(f"{where}[{i}]", f"{s!r} is listed twice")
        out.append(s)
    return tuple(out)


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``6h``, ``1d``, ``1h30m`` -> seconds; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", text)
    if not text or "".join(f"{n}{u}" for n, u in parts) != text:
        raise ValueError(text)
    return float(sum(int(n) * units[u] for n, u in parts))


def _duration_or_empty(v: Any, where: str) -> str:
    s = _str(v, where)
    if s:
        try:
            seconds = parse_duration(s)
        except ValueError:
            raise _fail(where, f"{s!r} is not a duration: a number with s, m, h or d (90s, 30m, 6h, 1d, 1h30m)") from None
        if seconds < 10:
            raise _fail(where, f"{s!r} is shorter than 10s")
    return s


def _retention(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10000:
        raise _fail(where, f"expected a number of archives to keep, 1-10000, got {v!r}")
    return v


def _abs_dir_or_empty(v: Any, where: str) -> str:
    s = _str(v, where)
    if s and not s.startswith("/"):
        raise _fail(where, f"{s!r} is not an absolute path")
    return s


def _hint(word: str, choices: Any) -> str:
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


# ---------------------------------------------------------------- the model


@dataclass(frozen=True, kw_only=True)
class APIConfig:
    """Where the Kubernetes API is served and what its certificate covers."""

    address: str = _key("address", _advertised_ip_or_empty, doc="the address other hosts reach this controller at (not loopback); empty: the host's first non-loopback address", default="")
    port: int = _key("port", _port, doc="the Kubernetes API's port", default=6443)
    external_address: str = _key("externalAddress", _host_or_empty, doc="a load balancer's address or name: put in tokens and kubeconfigs, and in the serving certificate", default="")
    sans: tuple[str, ...] = _key("sans", _hosts, doc="more IPs or DNS names for the API serving certificate", default=())
    mke_api_port: int = _key("mkeAPIPort", _port, doc="mke's own API on controllers (joining controllers)", default=9443)


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """The pod network and the cluster's address ranges."""

    provider: str = _key("provider", _one_of(network.NAMES), doc="the pod network: " + ", ".join(network.NAMES) + " (docs/airgap.md, Networks)", default=network.DEFAULT)
    pod_cidr: str = _key("podCIDR", _cidr, doc="pods' addresses; each node gets a /24 of it", default="10.244.0.0/16")
    service_cidr: str = _key("serviceCIDR", _cidr, doc="Services' cluster IPs (/12 at most); the API is its first address, DNS its tenth", default="10.96.0.0/12")
    cluster_domain: str = _key("clusterDomain", _domain, doc="the DNS domain of Services and pods", default="cluster.local")

    @property
    def kubernetes_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[1])

    @property
    def dns_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[10])


@dataclass(frozen=True, kw_only=True)
class EtcdConfig:
    """The embedded etcd (storage.type etcd)."""

    peer_address: str = _key("peerAddress", _ip_or_empty, doc="the address other controllers' etcd reaches this one at; empty: api.address", default="")
    client_port: int = _key("clientPort", _port, doc="etcd's client port (loopback and controllers)", default=2379)
    peer_port: int = _key("peerPort", _port, doc="etcd's peer port (between controllers)", default=2380)
    user: str = _key("user", _user_name, doc="the host user etcd runs as, owner of its data dir (CIS 1.1.12); added as a system user when the host has none of that name; root: run etcd as root", default="etcd")


@dataclass(frozen=True, kw_only=True)
class KineConfig:
    """kine (storage.type kine): etcd's API over SQLite, MySQL or PostgreSQL."""

    data_source: str = _key("dataSource", _str, doc="kine's datastore: empty for SQLite in the data dir, or a mysql:// or postgres:// DSN (passed in kine's environment, never on its command line)", default="")


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """The datastore of the control plane."""

    type: str = _key("type", _one_of(storage.NAMES), doc="the datastore: " + ", ".join(storage.NAMES), default=storage.DEFAULT)
    etcd: EtcdConfig = _key("etcd", default_factory=EtcdConfig)
    kine: KineConfig = _key("kine", default_factory=KineConfig)


@dataclass(frozen=True, kw_only=True)
class KonnectivityConfig:
    """The tunnel from the API server to the nodes (logs, exec, webhooks, metrics)."""

    enabled: bool = _key("enabled", _bool, doc="run konnectivity (the API reaches nodes through agents' tunnels)", default=True)
    agent_port: int = _key("agentPort", _port, doc="where konnectivity agents on the nodes connect", default=8132)
    admin_port: int = _key("adminPort", _port, doc="konnectivity-server's admin port (loopback)", default=8133)
    health_port: int = _key("healthPort", _port, doc="konnectivity-server's health port", default=8092)


POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
SYSTEM_NAMESPACE = "kube-system"


@dataclass(frozen=True, kw_only=True)
class PodSecurityConfig:
    """Pod Security admission for namespaces without their own ``pod-security.kubernetes.io/*``
    labels: ``enforce`` refuses pods, ``audit`` annotates the audit log, ``warn`` warns the client.
    Exempt namespaces are never checked; kube-system (mke's add-ons, some privileged) must be one."""

    enforce: str = _key("enforce", _one_of(POD_SECURITY_LEVELS), doc="the level pods must meet: privileged, baseline or restricted", default="baseline")
    audit: str = _key("audit", _one_of(POD_SECURITY_LEVELS), doc="the level whose violations are recorded in the audit log", default="restricted")
    warn: str = _key("warn", _one_of(POD_SECURITY_LEVELS), doc="the level whose violations are returned to the client as warnings", default="restricted")
    exempt_namespaces: tuple[str, ...] = _key("exemptNamespaces", _namespaces, doc="namespaces never checked; must include kube-system unless enforce is privileged", default=(SYSTEM_NAMESPACE,))


@dataclass(frozen=True, kw_only=True)
class ControlPlaneConfig:
    """Isolation of the controller: no kubelet unless `worker` (or --enable-worker)."""

    worker: bool = _key("worker", _bool, doc="also run a worker on this controller (= --enable-worker)", default=False)
    taints: bool = _key("taints", _bool, doc="with worker: taint the node so that only tolerating pods run there", default=True)


@dataclass(frozen=True, kw_only=True)
class ImagesConfig:
    """Images of the cluster add-ons, pinned; `registry` replaces every image's registry host."""

    registry: str = _key("registry", _registry, doc="a registry host[/path] that replaces every add-on image's registry", default="")
    pause: str = _key("pause", _image, doc="the pod sandbox image (built on each node from the embedded pause)", default="registry.k8s.io/pause:3.10.2")  # = recipes/pause.toml
    coredns: str = _key("coredns", _image, doc="CoreDNS (built on each node from the embedded binary)", default="registry.k8s.io/coredns/coredns:v1.15.0")
    metrics_server: str = _key("metricsServer", _image, doc="metrics-server (built on each node)", default="registry.k8s.io/metrics-server/metrics-server:v0.9.0")
    konnectivity_agent: str = _key(
        "konnectivityAgent", _image, doc="the konnectivity agent (built on each node)", default="registry.k8s.io/kas-network-proxy/proxy-agent:v0.36.0"
    )
    calico_cni: str = _key("calicoCNI", _image, doc="network.provider calico: its CNI image (pulled)", default="quay.io/calico/cni:v3.30.3")
    calico_node: str = _key("calicoNode", _image, doc="network.provider calico: calico-node (pulled)", default="quay.io/calico/node:v3.30.3")
    calico_kube_controllers: str = _key(
        "calicoKubeControllers", _image, doc="network.provider calico: its controllers (pulled)", default="quay.io/calico/kube-controllers:v3.30.3"
    )

    def ref(self, attr: str) -> str:
        """The image for ``attr`` with ``registry`` applied (the path after the host is kept)."""
        image: str = getattr(self, attr)
        if not self.registry:
            return image
        first, _, rest = image.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            image = rest  # drop the original registry host
        return f"{self.registry}/{image}"


@dataclass(frozen=True, kw_only=True)
class RegistryMirror:
    """Where to pull a registry's images from: each endpoint in order, then the registry itself."""

    endpoints: tuple[str, ...] = _key("endpoints", _endpoints, doc="mirror URLs, tried in order (https:// by default, http:// for plain HTTP)", default=())


@dataclass(frozen=True, kw_only=True)
class RegistryHost:
    """How to talk TLS to one registry host (a mirror endpoint's host, or a registry of its own)."""

    ca_file: str = _key("caFile", _pem_file("CERTIFICATE", "certificate"), doc="absolute path of the CA that signed the host's certificate", default="")
    cert_file: str = _key("certFile", _pem_file("CERTIFICATE", "certificate"), doc="absolute path of a client certificate (with keyFile)", default="")
    key_file: str = _key("keyFile", _pem_file("PRIVATE KEY", "private key"), doc="absolute path of the client certificate's key", default="")
    insecure_skip_verify: bool = _key("insecureSkipVerify", _bool, doc="do not verify the host's certificate (testing only)", default=False)


_NO_AUTH = ("not supported: mke writes no registry credentials to disk; give pods an imagePullSecret "
            "(docs/airgap.md, Registry mirrors and private registries)")
_K3S_TLS = "write caFile, certFile, keyFile and insecureSkipVerify directly under the host (k3s nests them in tls)"


@dataclass(frozen=True, kw_only=True)
class RegistriesConfig:
    """Registry mirrors and per-host TLS for this node's containerd (a node's own setting:
    a joining controller keeps its own, and ``mke worker --registries FILE`` reads the same schema)."""

    mirrors: Mapping[str, RegistryMirror] = _key(
        "mirrors", _mapping_of(RegistryMirror, wildcard=True, refuse={"endpoint": "did you mean 'endpoints'?",
                                                                      "rewrite": "rewrites are not supported"}),
        default_factory=dict)
    configs: Mapping[str, RegistryHost] = _key(
        "configs", _mapping_of(RegistryHost, wildcard=False, refuse={"auth": _NO_AUTH, "tls": _K3S_TLS}),
        default_factory=dict)


def _ship_interval_or_empty(v: Any, where: str) -> str:
    s = _str(v, where)
    if s:
        try:
            seconds = parse_duration(s)
        except ValueError:
            raise _fail(where, f"{s!r} is not a duration: a number with s, m, h or d (1s, 5s, 1m)") from None
        if not 1 <= seconds <= 3600:
            raise _fail(where, f"{s!r} is out of range: 1s to 1h (it is how many seconds of writes a restore may lose)")
    return s


def _snapshot_interval(v: Any, where: str) -> str:
    s = _str(v, where)
    try:
        seconds = parse_duration(s)
    except ValueError:
        raise _fail(where, f"{s!r} is not a duration: a number with s, m, h or d (30m, 6h, 1d)") from None
    if seconds < 60:
        raise _fail(where, f"{s!r} is shorter than 1m")
    return s


def _generations(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
        raise _fail(where, f"expected a number of generations to keep, 1-1000, got {v!r}")
    return v


@dataclass(frozen=True, kw_only=True)
class ContinuousBackupConfig:
    """Continuous backup of kine's SQLite database (docs/backup.md, Continuous backup): a base snapshot, then the
    WAL's new transactions shipped every `interval` into `directory`; `mke restore DIRECTORY` restores the newest
    state shipped. Only with storage.type kine on SQLite."""

    interval: str = _key("interval", _ship_interval_or_empty, doc="how often the WAL is shipped (1s-1h); a restore loses about this much, plus the time shipping takes; empty: off", default="")
    snapshot_interval: str = _key("snapshotInterval", _snapshot_interval, doc="how often a new generation (base snapshot) starts, bounding replay time", default="6h")
    retention: int = _key("retention", _generations, doc="how many generations to keep (the newest; older ones are deleted)", default=2)
    directory: str = _key("directory", _abs_dir_or_empty, doc="an absolute directory for the generations; empty: <data-dir>/backups/wal", default="")


@dataclass(frozen=True, kw_only=True)
class BackupConfig:
    """Scheduled backups on each controller (docs/backup.md): every `interval`, one archive as `mke backup`
    writes it (`mke-snapshot-<node>-<time>.tar.zst`) into `directory`; the newest `retention` scheduled ones are
    kept. `mke backup list` shows them."""

    interval: str = _key("interval", _duration_or_empty, doc="how often, e.g. 30m, 6h, 1d (10s at least); empty: no scheduled backups", default="")
    retention: int = _key("retention", _retention, doc="how many scheduled archives to keep; older ones are deleted (mke backup's own never)", default=5)
    directory: str = _key("directory", _abs_dir_or_empty, doc="an absolute directory for the archives; empty: <data-dir>/backups", default="")
    continuous: ContinuousBackupConfig = _key("continuous", default_factory=ContinuousBackupConfig)


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """mke.yaml."""

    api: APIConfig = _key("api", default_factory=APIConfig)
    network: NetworkConfig = _key("network", default_factory=NetworkConfig)
    storage: StorageConfig = _key("storage", default_factory=StorageConfig)
    konnectivity: KonnectivityConfig = _key("konnectivity", default_factory=KonnectivityConfig)
    control_plane: ControlPlaneConfig = _key("controlPlane", default_factory=ControlPlaneConfig)
    pod_security: PodSecurityConfig = _key("podSecurity", default_factory=PodSecurityConfig)
    images: ImagesConfig = _key("images", default_factory=ImagesConfig)
    extra_args: Mapping[str, Mapping[str, str]] = _key("extraArgs", _extra_args, doc="component -> flag -> value, added to (or replacing) mke's flags for that component", default_factory=dict)
    extra_env: Mapping[str, Mapping[str, str]] = _key("extraEnv", _extra_env, doc="component -> environment variable -> value, added to (or replacing) mke's for that component; mke's own: kube-apiserver GOGC 50, and on a controller with 4 GiB or less (host or cgroup) kube-apiserver GOGC 25 and etcd GOGC 50; e.g. kube-apiserver: {GOGC: '100'} for Go's default garbage collection (docs/performance.md)", default_factory=dict)
    registries: RegistriesConfig = _key("registries", default_factory=RegistriesConfig)
    backup: BackupConfig = _key("backup", default_factory=BackupConfig)

    def args_for(self, component: str) -> dict[str, str]:
        return dict(self.extra_args.get(component, {}))

    def env_for(self, component: str) -> dict[str, str]:
        return dict(self.extra_env.get(component, {}))


# ---------------------------------------------------------------- loading


def _parse_section(cls: type, data: Any, where: str, errors: list[str] | None = None) -> Any:
    """``data`` as ``cls``; every bad key or value is appended to ``errors`` (all of them, not just
    the first) and None returned when there was any; without ``errors`` the first one raises."""
    collect = errors if errors is not None else []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        collect.append(str(_fail(where or "(top level)", f"expected a mapping, got {type(data).__name__}")))
        if errors is None:
            raise ConfigError(collect[0])
        return None
    fields = {f.metadata["key"]: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    before = len(collect)
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        f = fields.get(key)
        if f is None:
            collect.append(str(_fail(path, f"unknown key{_hint(str(key), fields)}")))
            continue
        section = _SECTIONS.get(f.type) if isinstance(f.type, str) else None
        try:
            if section is not None:
                kwargs[f.name] = _parse_section(section, value, path, collect)
            else:
                kwargs[f.name] = f.metadata["check"](value, path)
        except ConfigError as e:
            collect.append(str(e))
    if len(collect) > before:
        if errors is None:
            raise ConfigError(collect[before])
        return None
    return cls(**kwargs)


_SECTIONS: dict[str, type] = {
    c.__name__: c
    for c in (APIConfig, NetworkConfig, EtcdConfig, KineConfig, StorageConfig, KonnectivityConfig,
              ControlPlaneConfig, PodSecurityConfig, ImagesConfig, RegistriesConfig, ContinuousBackupConfig, BackupConfig, ClusterConfig)
}


def _cross_check(cfg: ClusterConfig) -> None:
    psa = cfg.pod_security
    if psa.enforce != "privileged" and SYSTEM_NAMESPACE not in psa.exempt_namespaces:
        raise _fail("podSecurity.exemptNamespaces", f"must include {SYSTEM_NAMESPACE}, where mke's add-ons run (the network "
                    "provider's pods are privileged); or set podSecurity.enforce: privileged")
    pod = ipaddress.ip_network(cfg.network.pod_cidr)
    svc = ipaddress.ip_network(cfg.network.service_cidr)
    if pod.version == svc.version and pod.overlaps(svc):
        raise _fail("network.serviceCIDR", f"{svc} overlaps network.podCIDR {pod}")
    if svc.version == 4 and svc.prefixlen < 12:
        raise _fail("network.serviceCIDR", f"{svc} is larger than the apiserver allows (/12 at most)")
    ports = {
        "api.port": cfg.api.port,
        "api.mkeAPIPort": cfg.api.mke_api_port,
        "konnectivity.agentPort": cfg.konnectivity.agent_port,
        "konnectivity.adminPort": cfg.konnectivity.admin_port,
        "konnectivity.healthPort": cfg.konnectivity.health_port,
    }
    network.get(cfg.network.provider).check(cfg)
    backend = storage.get(cfg.storage.type)
    ports |= backend.ports(cfg)
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise _fail(name, f"port {port} is already used by {seen[port]}")
        seen[port] = name
    backend.check(cfg)
    others = {n for b in storage.every() if b is not backend for n in b.component_names()}
    for key, given in (("extraArgs", cfg.extra_args), ("extraEnv", cfg.extra_env)):
        for comp in given:
            if comp in others:
                raise _fail(f"{key}.{comp}", f"{comp} does not run with storage.type {cfg.storage.type}")
    _check_registries(cfg.registries, "registries.")
    if cfg.backup.continuous.interval:
        from mke.storage.kine import DIALECTS, scheme

        database, shared = DIALECTS.get(scheme(cfg.storage.kine.data_source), ("?", True))
        if cfg.storage.type != "kine" or shared:
            store = "etcd" if cfg.storage.type != "kine" else database
            raise _fail("backup.continuous.interval", f"continuous backup ships SQLite's write-ahead log, and this "
                        f"datastore is {store}: use backup.interval (scheduled snapshots) instead"
                        + ("" if cfg.storage.type != "kine" else "; back up the database with its own tools"))


def _check_registries(r: RegistriesConfig, prefix: str) -> None:
    for name, mirror in r.mirrors.items():
        if not mirror.endpoints:
            raise _fail(f"{prefix}mirrors[{name}]", "needs endpoints: a list of URLs to pull its images from")
    for name, host in r.configs.items():
        if bool(host.cert_file) != bool(host.key_file):
            have, lacks = ("certFile", "keyFile") if host.cert_file else ("keyFile", "certFile")
            raise _fail(f"{prefix}configs[{name}].{lacks}", f"{have} is set: a client certificate needs both "
                                                             "certFile and keyFile")


# Top-level keys of other distributions' config files: a hint instead of "unknown key".
_FOREIGN = (
    ({"apiVersion", "kind", "spec"}, "a k0s configuration (apiVersion/kind/spec)"),
    ({"write-kubeconfig-mode", "tls-san", "cluster-cidr", "service-cidr", "node-label", "disable", "token",
      "server", "datastore-endpoint", "flannel-backend", "node-ip", "data-dir", "cluster-init"},
     "a k3s/RKE2 config.yaml (command-line flags as keys)"),
)


def _foreign(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    for keys, what in _FOREIGN:
        if keys & set(data) and not set(data) & {f.metadata["key"] for f in dataclasses.fields(ClusterConfig)}:
            return what
    return ""


def parse_config(data: Any, source: str = "mke.yaml") -> ClusterConfig:
    """Validate an already-parsed YAML document. Every error is one line prefixed with ``source``,
    and all of them are reported at once (the ConfigError's message has one line per error)."""
    foreign = _foreign(data)
    if foreign:
        raise ConfigError(f"{source}: this looks like {foreign}, not an mke.yaml; mke has its own format: "
                          "`mke config create` prints it with every key and its default")
    errors: list[str] = []
    cfg = _parse_section(ClusterConfig, data, "", errors)
    if errors:
        raise ConfigError("\n".join(f"{source}: {e}" for e in errors))
    try:
        _cross_check(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


class _DuplicateKey(Exception):
    pass


@functools.cache
def _strict_loader() -> type:
    """yaml.SafeLoader, except that a key given twice in one mapping is an error (PyYAML keeps the
    last one silently, so `api:` written twice would drop the first section without a word)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _DuplicateKey(f"line {line}: key {key!r} is given twice (first at line {seen[key]}); "
                                        "keep one")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def load_config(path: Path | None) -> ClusterConfig:
    """Read and validate ``path``; ``None`` gives the default configuration."""
    if path is None:
        return default_config()
    return parse_config(_read_yaml(Path(path), "the config"), str(path))


def read_yaml(path: Path, what: str) -> Any:
    """``path`` as YAML (duplicate keys refused); every problem a ConfigError naming the file."""
    return _read_yaml(path, what)


def _read_yaml(path: Path, what: str) -> Any:
    import yaml

    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); {what} is YAML") from None
    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader that refuses duplicate keys
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from e


def parse_registries(data: Any, source: str) -> RegistriesConfig:
    """A registries file (``mke worker --registries``): the ``registries`` section of mke.yaml
    at the top level (``mirrors:``, ``configs:``)."""
    if isinstance(data, dict) and "registries" in data:
        raise ConfigError(f"{source}: registries: this file holds what mke.yaml's registries section does, at the "
                          "top level: mirrors: and configs:")
    errors: list[str] = []
    r = _parse_section(RegistriesConfig, data, "", errors)
    if errors:
        raise ConfigError("\n".join(f"{source}: {e}" for e in errors))
    try:
        _check_registries(r, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return r


def load_registries(path: Path) -> RegistriesConfig:
    """Read and validate a registries file."""
    return parse_registries(_read_yaml(Path(path), "the registries file"), str(path))


def default_config() -> ClusterConfig:
    return ClusterConfig()


# ---------------------------------------------------------------- the running server's configuration

RUNNING_CONFIG_NAME = "config.json"


def running_config_path(data_dir: Path) -> Path:
    """``<data-dir>/run/config.json``: the effective configuration of the mke server running there
    (mke.yaml with the command line's overrides), written 0600 at start, removed at stop."""
    from mke.node.datadir import run_dir

    return run_dir(data_dir) / RUNNING_CONFIG_NAME


def write_running_config(data_dir: Path, cfg: ClusterConfig) -> None:
    import json

    from mke.node.files import write_file_atomic

    write_file_atomic(running_config_path(data_dir), json.dumps(config_to_dict(cfg), indent=1).encode(), 0o600)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def node_config(data_dir: Path, path: Path | None, *, warn: Callable[[str], None] | None = None) -> ClusterConfig:
    """The configuration a command on a controller acts on: the running server's (the one source of
    truth on a node, so that ``mke token create`` without ``--config`` still carries the server's
    api.externalAddress), else ``path``'s (or the defaults). A ``--config`` that differs from the
    running one is reported through ``warn`` and not used."""
    import json

    from mke.node.datadir import holder_pid

    running = running_config_path(data_dir)
    if holder_pid(data_dir) is None or not running.exists():
        return load_config(path)
    try:
        data = json.loads(running.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{running}: cannot read the running server's configuration: {e}") from e
    cfg = parse_config(data, f"{running} (the running server's configuration)")
    if path is not None and warn is not None:
        given = _flat(config_to_dict(load_config(path)))
        differs = sorted(k for k in given.keys() | _flat(data).keys() if given.get(k) != _flat(data).get(k))
        if differs:
            warn(f"{path} differs from the configuration of the mke server running with {data_dir} "
                 f"({', '.join(differs[:4])}{', ...' if len(differs) > 4 else ''}); using the running one")
    return cfg


def config_to_dict(obj: Any) -> Any:
    """The YAML form of a config (or section), keys in declaration order."""
    if dataclasses.is_dataclass(obj):
        return {f.metadata["key"]: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [config_to_dict(x) for x in obj]
    if isinstance(obj, Mapping):
        return {k: config_to_dict(v) for k, v in obj.items()}
    return obj


def with_overrides(cfg: ClusterConfig, **changes: Any) -> ClusterConfig:
    """A copy of ``cfg`` with dotted-path changes, e.g. ``with_overrides(c, **{"control_plane.worker": True})``."""
    for dotted, value in changes.items():
        cfg = _replace_path(cfg, dotted.split("."), value)
    return cfg


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _replace_path(getattr(obj, parts[0]), parts[1:], value)})


def dump_config(cfg: ClusterConfig) -> str:
    import yaml

    header = (
        "# mke cluster configuration (mke config create). Every key is optional;\n"
        "# an empty api.address means the host's first non-loopback address.\n"
    )
    return header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
