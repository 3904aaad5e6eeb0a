"""TLS on every listening port of a running cluster (issue 17): each TCP socket that mke's
processes listen on, on the controller and on both workers (their own network namespaces and
the network namespaces of mke's system pods), is found from the test machine with
``nsenter --net=... ss -ltnpH``, named by the process that holds it, and, when it speaks TLS,
probed with the test machine's ``openssl s_client``:

    TLS 1.0, TLS 1.1                         refused everywhere (mke's policy, both builds)
    TLS 1.2 ECDHE-ECDSA/RSA-AES128-GCM       accepted everywhere (approved)
    TLS 1.2 ECDHE-ECDSA/RSA-CHACHA20-POLY1305  refused everywhere (mke's TLS 1.2 suites, both builds)
    TLS 1.2 ECDHE-AES128-GCM over X25519     FIPS: refused (X25519 alone is not approved)
    TLS 1.3 TLS_AES_128_GCM_SHA256           accepted everywhere (approved)
    TLS 1.3 TLS_CHACHA20_POLY1305_SHA256     FIPS: refused (not approved; TLS 1.3 suites are not
                                             configurable, so the standard build accepts it)
    TLS 1.3 TLS_AES_128_GCM_SHA256 over X25519  FIPS: refused

Go's crypto/tls in FIPS 140-3 mode (``GODEBUG=fips140=on``, Go 1.26.11 of the recipes:
``crypto/tls/defaults_fips140.go``) keeps TLS 1.2 and 1.3 only, the ECDHE suites with AES-GCM
(and two AES-CBC-SHA256 ones), TLS_AES_128/256_GCM, and the groups X25519MLKEM768,
SecP256r1MLKEM768, SecP384r1MLKEM1024, P-256, P-384, P-521: plain X25519 is not among them.
mke's API (Python on the OpenSSL FIPS provider) has no ChaCha20 at all and no X25519 as an
approved key agreement.

Each probe offers one protocol version, only the named suites and only the named group, with
``@SECLEVEL=0`` so that the client itself refuses nothing; the ClientHello that ``-msg`` shows is
parsed and must offer exactly that (else the probe, not the server, is wrong). A probe is
*accepted* when the server answers with a ServerHello (the handshake may still stop later for
want of a client certificate: etcd, kubelet), *refused* when it answers with an alert or closes.

Every listener must be in ``LISTENERS`` (which process, which port, what it is, TLS or not):
a new port, or a port held by a process nobody named, fails the test. The table is printed and
written as Markdown to ``$MKE_E2E_DIR/tls-probe-<build>.md`` for docs/fips.md.

Run alone: ``flock /var/tmp/mke-e2e.lock env MKE_E2E_SKIP_BUILD=1 MKE_E2E_NO_CONFORMANCE=1 nox -s e2e --
-k tls_probe -s -v`` (``MKE_E2E_FIPS=1`` for the FIPS build).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.cluster import BASE, fips_build, mke_file
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.root]

# --------------------------------------------------------------------------- the probes

TLS10, TLS11, TLS12, TLS13 = 0x0301, 0x0302, 0x0303, 0x0304
VERSION_NAMES = {TLS10: "TLS 1.0", TLS11: "TLS 1.1", TLS12: "TLS 1.2", TLS13: "TLS 1.3"}
SUITES = {  # IANA code points of the suites the probes name
    "ECDHE-ECDSA-AES128-SHA": 0xC009, "ECDHE-RSA-AES128-SHA": 0xC013, "AES128-SHA": 0x002F,
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B, "ECDHE-RSA-AES128-GCM-SHA256": 0xC02F,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9, "ECDHE-RSA-CHACHA20-POLY1305": 0xCCA8,
    "TLS_AES_128_GCM_SHA256": 0x1301, "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
}
SCSV = {0x00FF, 0x5600}  # renegotiation info and fallback signalling values: not suites
GROUPS = {"P-256": 0x0017, "X25519": 0x001D}
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
OLD = ["ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "AES128-SHA"]  # suites TLS 1.0 and 1.1 have
GCM = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]
CHACHA = ["ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"]


@dataclass(frozen=True)
class Probe:
    """One ClientHello: a single version, only ``suites``, only the groups in ``groups`` (":"-separated).

    ``wants``: the group the probe is about, when ``groups`` must list another as well: in TLS 1.2 the
    supported groups also bound the curve of an ECDSA certificate (RFC 8422 5.1; Go and OpenSSL check
    it), so an X25519-only offer would be refused by any server with a P-256 certificate. The probe
    then offers X25519 first and P-256, and counts as accepted only when the server's key exchange
    (ServerKeyExchange) uses X25519.
    """

    title: str
    version: int
    suites: tuple[str, ...]
    groups: str
    approved: bool  # allowed in FIPS 140-3 mode (Go's crypto/tls fips140 filters, the OpenSSL FIPS provider)
    both_builds: str = ""  # what must hold on the standard build too: "refused" or "accepted"
    wants: str = ""

    def args(self) -> list[str]:
        flag = {TLS10: "-tls1", TLS11: "-tls1_1", TLS12: "-tls1_2", TLS13: "-tls1_3"}[self.version]
        if self.version == TLS13:
            return [flag, "-ciphersuites", ":".join(self.suites), "-groups", self.groups]
        return [flag, "-cipher", ":".join(self.suites) + ":@SECLEVEL=0", "-groups", self.groups]


PROBES = (
    Probe("TLS 1.0", TLS10, tuple(OLD), "P-256", approved=False, both_builds="refused"),
    Probe("TLS 1.1", TLS11, tuple(OLD), "P-256", approved=False, both_builds="refused"),
    Probe("1.2 ECDHE AES-128-GCM", TLS12, tuple(GCM), "P-256", approved=True, both_builds="accepted"),
    Probe("1.2 ECDHE ChaCha20-Poly1305", TLS12, tuple(CHACHA), "P-256", approved=False, both_builds="refused"),
    Probe("1.2 ECDHE AES-128-GCM, X25519", TLS12, tuple(GCM), "X25519:P-256", approved=False, wants="X25519"),
    Probe("1.3 AES-128-GCM", TLS13, ("TLS_AES_128_GCM_SHA256",), "P-256", approved=True, both_builds="accepted"),
    Probe("1.3 ChaCha20-Poly1305", TLS13, ("TLS_CHACHA20_POLY1305_SHA256",), "P-256", approved=False),
    Probe("1.3 AES-128-GCM, X25519", TLS13, ("TLS_AES_128_GCM_SHA256",), "X25519", approved=False),
)
DETECT = PROBES[2]  # the approved TLS 1.2 probe tells a TLS port from a plain one


@dataclass
class Hello:
    """What a ClientHello or ServerHello says (RFC 8446 4.1.2, 4.1.3)."""

    version: int  # legacy_version
    random: bytes
    suites: list[int]
    extensions: dict[int, bytes]

    @property
    def versions(self) -> list[int]:
        """The offered versions (ClientHello) or the chosen one (ServerHello)."""
        sv = self.extensions.get(0x002B)
        if sv is None:
            return [self.version]
        if len(sv) == 2:  # ServerHello: the selected version
            return [int.from_bytes(sv, "big")]
        return [int.from_bytes(sv[1 + i:3 + i], "big") for i in range(0, sv[0], 2)]

    @property
    def groups(self) -> list[int]:
        g = self.extensions.get(0x000A, b"\0\0")
        return [int.from_bytes(g[2 + i:4 + i], "big") for i in range(0, int.from_bytes(g[:2], "big"), 2)]


def parse_hello(body: bytes) -> Hello:
    """A ClientHello (type 1) or ServerHello (type 2) handshake message, header included."""
    kind, p = body[0], 4
    version = int.from_bytes(body[p:p + 2], "big")
    random = body[p + 2:p + 34]
    p += 34
    p += 1 + body[p]  # session id
    if kind == 1:
        n = int.from_bytes(body[p:p + 2], "big")
        suites = [int.from_bytes(body[p + 2 + i:p + 4 + i], "big") for i in range(0, n, 2)]
        p += 2 + n
        p += 1 + body[p]  # compression methods
    else:
        suites = [int.from_bytes(body[p:p + 2], "big")]
        p += 3  # the suite, the compression method
    ext: dict[int, bytes] = {}
    if p + 2 <= len(body):
        end = p + 2 + int.from_bytes(body[p:p + 2], "big")
        p += 2
        while p + 4 <= end:
            t, n = int.from_bytes(body[p:p + 2], "big"), int.from_bytes(body[p + 2:p + 4], "big")
            ext[t] = body[p + 4:p + 4 + n]
            p += 4 + n
    return Hello(version, random, suites, ext)


MSG_RE = re.compile(r"^(>>>|<<<) (.*)$")


def messages(out: str) -> list[tuple[str, str, bytes]]:
    """``openssl s_client -msg`` output as (direction, header line, bytes)."""
    found: list[tuple[str, str, bytearray]] = []
    for line in out.splitlines():
        m = MSG_RE.match(line)
        if m:
            found.append((m.group(1), m.group(2), bytearray()))
        elif found and line.startswith("    ") and re.fullmatch(r"(?:\s+[0-9a-f]{2})+\s*", line):
            found[-1][2].extend(bytes.fromhex(line.strip().replace(" ", "")))
    return [(d, h, bytes(b)) for d, h, b in found]


@dataclass
class Outcome:
    """One probe's result: ``accepted``, ``refused`` (with the alert or "closed"), or ``not TLS``."""

    verdict: str
    detail: str = ""

    @property
    def speaks_tls(self) -> bool:
        """A ServerHello or a TLS alert came back (not silence, a close, or something else)."""
        return self.verdict == "accepted" or (self.verdict == "refused" and self.detail != "closed"
                                              and not self.detail.startswith("no answer"))

    def cell(self) -> str:
        return f"{self.verdict} ({self.detail})" if self.detail and self.verdict != "accepted" else self.verdict


def check_offer(probe: Probe, hello: Hello) -> None:
    """The probe's ClientHello offers exactly its version, its suites and its group, or the harness is wrong."""
    want_suites = sorted(SUITES[s] for s in probe.suites)
    got_suites = sorted(s for s in hello.suites if s not in SCSV)
    problems = []
    if hello.versions != [probe.version]:
        problems.append(f"versions {[hex(v) for v in hello.versions]}")
    if got_suites != want_suites:
        problems.append(f"suites {[hex(s) for s in got_suites]}, wanted {[hex(s) for s in want_suites]}")
    if hello.groups != [GROUPS[g] for g in probe.groups.split(":")]:
        problems.append(f"groups {[hex(g) for g in hello.groups]}")
    if problems:
        raise AssertionError(f"probe {probe.title!r}: openssl offered something else: {'; '.join(problems)}")


def key_exchange(p: Probe, msgs: list[tuple[str, str, bytes]]) -> Outcome:
    """Accepted when the TLS 1.2 ServerKeyExchange's named curve (RFC 8422 5.4) is the one ``p`` wants."""
    ske = next((b for d, h, b in msgs if d == "<<<" and h.endswith("ServerKeyExchange")), None)
    if ske is None or ske[4] != 3:
        return Outcome("refused", "no ECDHE key exchange")
    curve = int.from_bytes(ske[5:7], "big")
    if curve == GROUPS[p.wants]:
        return Outcome("accepted")
    name = next((n for n, c in GROUPS.items() if c == curve), hex(curve))
    return Outcome("refused", f"{name} chosen")


def probe(netns: str, address: str, port: int, p: Probe, timeout: float = 10.0) -> Outcome:
    """``openssl s_client`` in ``netns`` (a path for nsenter --net) against address:port with ``p``."""
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    argv = ["nsenter", f"--net={netns}", "--", "openssl", "s_client", "-connect", target, "-msg", "-noservername",
            *p.args()]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENSSL_CONF": "/dev/null"})
    except subprocess.TimeoutExpired:
        return Outcome("refused", f"no answer in {timeout:.0f} s")
    out = proc.stdout + proc.stderr
    msgs = messages(out)
    client = [b for d, h, b in msgs if d == ">>>" and h.endswith("ClientHello")]
    if not client:
        raise AssertionError(f"probe {p.title!r} to {target}: openssl sent no ClientHello:\n{out[-2000:]}")
    check_offer(p, parse_hello(client[0]))
    for d, h, b in msgs:
        if d != "<<<":
            continue
        if h.startswith("Not TLS data"):
            return Outcome("not TLS", h.split(" [")[0])
        if h.endswith("ServerHello"):
            sh = parse_hello(b)
            if sh.random == HRR_RANDOM:
                continue
            if sh.versions != [p.version] or sh.suites[0] not in {SUITES[s] for s in p.suites}:
                raise AssertionError(f"{target}: answered probe {p.title!r} with {hex(sh.versions[0])}, "
                                     f"suite {hex(sh.suites[0])}: not what was offered")
            if p.wants:
                return key_exchange(p, msgs)
            return Outcome("accepted")
        if ", Alert " in h or h.split(" [")[0].endswith("Alert"):
            return Outcome("refused", h.split("], ", 1)[-1].replace("fatal ", ""))
    return Outcome("refused", "closed")


# --------------------------------------------------------------------------- the listeners


@dataclass(frozen=True)
class Known:
    """A listener mke is meant to have: who holds it, what it is, whether it speaks TLS, and whether it
    must listen on loopback only (the "(loopback...)" in ``what``; checked)."""

    what: str
    tls: bool

    @property
    def loopback_only(self) -> bool:
        return "loopback" in self.what


# (process, port) -> what it is; port None: any port on loopback (picked by the process).
LISTENERS: dict[tuple[str, int | None], Known] = {
    # controller
    ("kube-apiserver", 6443): Known("Kubernetes API", tls=True),
    ("etcd", 2379): Known("etcd clients (loopback)", tls=True),
    ("etcd", 2380): Known("etcd peers", tls=True),
    ("konnectivity-server", 8132): Known("konnectivity agents", tls=True),
    ("konnectivity-server", 8133): Known("konnectivity-server admin (loopback, plain HTTP)", tls=False),
    ("konnectivity-server", 8092): Known("konnectivity-server health (loopback, plain HTTP)", tls=False),
    ("kube-controller-manager", 10257): Known("controller-manager (loopback)", tls=True),
    ("kube-scheduler", 10259): Known("scheduler (loopback)", tls=True),
    ("mke", 9443): Known("mke API (joining controllers, tokens)", tls=True),
    # worker
    ("kubelet", 10250): Known("kubelet API", tls=True),
    ("kubelet", 10248): Known("kubelet healthz (loopback, plain HTTP)", tls=False),
    ("kube-proxy", 10249): Known("kube-proxy metrics (loopback, plain HTTP)", tls=False),
    ("kube-proxy", 10256): Known("kube-proxy healthz (loopback, plain HTTP)", tls=False),
    ("kube-router", 20244): Known("kube-router health (loopback, plain HTTP)", tls=False),
    ("kube-router", 179): Known("BGP between nodes (plain TCP by protocol)", tls=False),
    ("kube-router", 50051): Known("GoBGP admin gRPC (loopback, plain)", tls=False),
    ("containerd", None): Known("CRI streaming server (loopback, plain HTTP)", tls=False),
    # system pods (their own network namespaces)
    ("metrics-server", 10250): Known("metrics-server (pod)", tls=True),
    ("coredns", 53): Known("DNS over TCP (pod)", tls=False),
    ("coredns", 8080): Known("CoreDNS health (pod, plain HTTP)", tls=False),
    ("coredns", 8181): Known("CoreDNS ready (pod, plain HTTP)", tls=False),
    ("coredns", 9153): Known("CoreDNS metrics (pod, plain HTTP)", tls=False),
    ("konnectivity-agent", 8133): Known("konnectivity-agent admin (pod loopback, plain HTTP)", tls=False),
    ("konnectivity-agent", 8134): Known("konnectivity-agent health (pod, plain HTTP)", tls=False),
}
# A process's executable name -> the name above (images may name the binary otherwise).
PROCESS_NAMES = {"proxy-server": "konnectivity-server", "proxy-agent": "konnectivity-agent"}


@dataclass
class Listener:
    host: str  # ctl, w1, w2
    netns: str  # for nsenter --net=
    place: str  # "host" or "pod <name>"
    address: str  # as ss shows it
    port: int
    pids: list[int]
    process: str  # the component, by its executable (or "mke")
    known: Known | None = None
    results: dict[str, Outcome] = field(default_factory=dict)
    detected: Outcome | None = None  # the answer to the first (approved TLS 1.2) probe

    @property
    def connect(self) -> str:
        a = self.address.strip("[]").split("%")[0]
        return "127.0.0.1" if a in ("*", "0.0.0.0", "::") else a

    @property
    def loopback(self) -> bool:
        a = self.address.strip("[]").split("%")[0].removeprefix("::ffff:")
        return a.startswith("127.") or a == "::1"


def argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


POD_UID = re.compile(r"[/-]pod([0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12})")


def pod_namespaces(cluster, host: str) -> dict[str, str]:
    """The network namespaces of ``host``'s pods: a /proc/<pid>/ns/net path (one pid each) -> the pod's UID.

    A pod's processes are those in the cgroups under the worker's ``--cgroup-root`` (kubelet puts
    every pod there; cgroup v1 or v2); their shims do not say which containerd started them, and
    their root reads as "/" from outside."""
    prefix = cluster.cgroup_root(host) + "/"
    own = os.stat(f"/run/netns/{cluster.host(host).netns}").st_ino
    found: dict[int, tuple[str, str]] = {}
    for e in Path("/proc").iterdir():
        if not e.name.isdigit():
            continue
        try:
            groups = [line.split(":", 2)[2] for line in (e / "cgroup").read_text().splitlines()]
            ino = os.stat(e / "ns" / "net").st_ino
        except (OSError, IndexError):
            continue
        mine = [g for g in groups if g.startswith(prefix)]
        if ino != own and mine:
            m = POD_UID.search(mine[0])
            found.setdefault(ino, (f"/proc/{e.name}/ns/net", m.group(1).replace("_", "-") if m else "?"))
    return dict(found.values())


SS_USER = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')


def listeners_in(host: str, netns: str, place: str, mke_pids: set[int]) -> list[Listener]:
    out = subprocess.run(["nsenter", f"--net={netns}", "--", "ss", "-ltnpH"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        local = cols[3]
        address, port = local.rsplit(":", 1)
        pids = sorted({int(m.group(2)) for m in SS_USER.finditer(line)})
        names = set()
        for pid in pids:
            names.add("mke" if pid in mke_pids else PROCESS_NAMES.get(Path(argv0(pid)).name, Path(argv0(pid)).name))
        process = " + ".join(sorted(names)) or "(no process)"
        found.append(Listener(host, netns, place, address, int(port), pids, process))
    return found


def identify(ls: Listener) -> Known | None:
    k = LISTENERS.get((ls.process, ls.port))
    if k is None and ls.loopback:
        k = LISTENERS.get((ls.process, None))
    return k


def every_listener(cluster, core) -> list[Listener]:
    mke_pids = {p.pid for p in [cluster.controller, *cluster.workers.values()] if p is not None}
    pods = {p.metadata.uid: p.metadata.name for p in core.list_pod_for_all_namespaces().items}
    found = []
    for host in ("ctl", *sorted(cluster.workers)):
        found += listeners_in(host, f"/run/netns/{cluster.host(host).netns}", "host", mke_pids)
        for path, uid in pod_namespaces(cluster, host).items():
            found += listeners_in(host, path, f"pod {pods.get(uid, uid)}", mke_pids)
    return found


# --------------------------------------------------------------------------- the table


def plain_answer(o: Outcome | None) -> str:
    if o is None:
        return "-"
    if o.verdict == "not TLS":
        return "a non-TLS answer"
    if o.verdict == "refused" and o.detail == "closed":
        return "closed without a word"
    return o.cell()


def table(rows: list[Listener]) -> str:
    """Two Markdown tables: the TLS listeners with every probe's outcome, then the plain ones with the
    answer they gave to a TLS ClientHello."""
    head = ["host", "component", "listens on", "what", *(p.title for p in PROBES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    plain = ["| host | component | listens on | what | answer to a ClientHello |", "|---|---|---|---|---|"]
    for ls in rows:
        where = f"{ls.address}:{ls.port}" + (f" ({ls.place})" if ls.place != "host" else "")
        what = ls.known.what if ls.known else "**not identified**"
        if ls.known and not ls.known.tls:
            plain.append(f"| {ls.host} | {ls.process} | {where} | {what} | {plain_answer(ls.detected)} |")
            continue
        cells = [ls.results[p.title].cell() if p.title in ls.results else "-" for p in PROBES]
        lines.append("| " + " | ".join([ls.host, ls.process, where, what, *cells]) + " |")
    return "\n".join(lines) + "\n\nListeners without TLS:\n\n" + "\n".join(plain) + "\n"


def build_name() -> str:
    return "fips" if fips_build() else "standard"


# --------------------------------------------------------------------------- the test


def system_pods_running(core) -> bool:
    pods = core.list_namespaced_pod("kube-system").items
    names = {p.metadata.name.split("-")[0] for p in pods if p.status.phase == "Running"
             and all(c.ready for c in p.status.container_statuses or [])}
    return {"metrics", "coredns", "konnectivity"} <= names


def test_tls_probe_every_listening_port(cluster, core):
    """Every TCP listener of mke on the controller and the workers is known, and its TLS is what the build
    promises: TLS 1.0/1.1 and TLS 1.2 ChaCha20 refused and the approved suites accepted on both builds;
    on the FIPS build every probe that is not approved refused as well."""
    wait_until("metrics-server, CoreDNS and the konnectivity agents running", lambda: system_pods_running(core),
               timeout=300)
    rows = sorted(every_listener(cluster, core),
                  key=lambda ls: (ls.host != "ctl", ls.host, ls.place != "host", ls.place, ls.port, ls.address))
    for ls in rows:
        ls.known = identify(ls)
    problems = [f"{ls.host} {ls.place} {ls.address}:{ls.port}: held by {ls.process} (pids {ls.pids}), which is not "
                f"in LISTENERS: name it there, with what it is and whether it speaks TLS"
                for ls in rows if ls.known is None]

    for ls in rows:
        if ls.known is None:
            continue
        if ls.known.loopback_only and not ls.loopback:
            problems.append(f"{ls.host} {ls.process} {ls.address}:{ls.port}: listens beyond loopback, and LISTENERS "
                            f"says {ls.known.what!r}")
        first = ls.detected = probe(ls.netns, ls.connect, ls.port, DETECT, timeout=5.0)
        speaks_tls = first.speaks_tls
        if ls.known.tls != speaks_tls:
            problems.append(f"{ls.host} {ls.process} {ls.address}:{ls.port}: LISTENERS says TLS={ls.known.tls}, "
                            f"the first probe got {first.cell()}")
        if not ls.known.tls:
            continue
        ls.results[DETECT.title] = first
        for p in PROBES:
            if p is not DETECT:
                ls.results[p.title] = probe(ls.netns, ls.connect, ls.port, p)

    for ls in rows:
        for p in PROBES:
            r = ls.results.get(p.title)
            if r is None:
                continue
            name = f"{ls.host} {ls.process} {ls.address}:{ls.port}: {p.title}"
            if p.both_builds and r.verdict != p.both_builds:
                problems.append(f"{name}: {r.cell()}, must be {p.both_builds} on every build")
            elif fips_build() and (r.verdict == "accepted") != p.approved:
                problems.append(f"{name}: {r.cell()} on the FIPS build, where it is "
                                f"{'approved' if p.approved else 'not approved'}")

    text = table(rows)
    out = BASE / f"tls-probe-{build_name()}.md"
    client = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False).stdout.strip()
    out.write_text(f"TLS probe of {mke_file()} ({build_name()} build; client: {client})\n\n{text}")
    print(f"\n[e2e] TLS probe, {build_name()} build ({out}):\n{text}", file=sys.stderr)
    found = {(ls.process, ls.port) for ls in rows if ls.known and ls.known.tls}
    for must in [("kube-apiserver", 6443), ("etcd", 2379), ("etcd", 2380), ("konnectivity-server", 8132),
                 ("kube-controller-manager", 10257), ("kube-scheduler", 10259), ("mke", 9443), ("kubelet", 10250),
                 ("metrics-server", 10250)]:
        if must not in found:
            problems.append(f"{must[0]} port {must[1]} was not found listening: the probe would have missed it")
    assert not problems, "\n".join(problems)
