"""mke/components: the manager's ordering and rollback with real child processes, the
secure flags each component gets, and the binary lookup."""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest

from mke.components.apiserver import KubeAPIServer
from mke.components.base import SupervisedComponent
from mke.components.context import ControllerContext
from mke.components.controller_manager import KubeControllerManager
from mke.components.manager import ComponentManager
from mke.config import parse_config
from mke.errors import ComponentError, StagingError
from mke.logsink import LogSink
from mke.node.binaries import BinaryResolver
from mke.storage.etcd import Etcd
from mke.storage.kine import Kine


def fake_binary(bin_dir: Path, name: str, body: str) -> Path:
    """A real executable: a python script that behaves like a component."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    p = bin_dir / name
    p.write_text(f"#!{sys.executable}\n{body}\n")
    p.chmod(0o755)
    return p


READY_WHEN_STARTED = """
import os, sys, time, signal
name = os.path.basename(sys.argv[0])
# the handler first: once <name>.up exists the test may stop us at any moment
signal.signal(signal.SIGTERM, lambda *a: (open(os.path.join(os.environ['MKE_TEST_DIR'], name + '.down'), 'w').write(str(time.time())), sys.exit(0)))
open(os.path.join(os.environ['MKE_TEST_DIR'], name + '.up'), 'w').write(str(os.getpid()))
while True:
    time.sleep(1)
"""


class FileReadyComponent(SupervisedComponent):
    """A supervised component that is ready once its process wrote <name>.up."""

    def __init__(self, ctx: ControllerContext, name: str, *, timeout: float = 10.0) -> None:
        super().__init__(ctx)
        self.name = self.binary = name
        self.ready_timeout = timeout

    def args(self) -> list[str]:
        return []

    def env(self) -> dict[str, str]:
        return {"MKE_TEST_DIR": str(self.ctx.data_dir)}

    def ready(self) -> bool:
        return (self.ctx.data_dir / f"{self.name}.up").exists()


@pytest.fixture()
def ctx(tmp_path: Path) -> ControllerContext:
    return ControllerContext(config=parse_config({}), data_dir=tmp_path, node_name="ctl-1", api_address="192.0.2.10",
                       binaries=BinaryResolver(tmp_path / "bin", user_bin_dir=True), sink=LogSink(io.StringIO()),
                       backoff_initial=0.05)


def test_starts_in_order_and_stops_in_reverse(ctx: ControllerContext) -> None:
    for n in ("store", "api", "ctrl", "sched"):
        fake_binary(ctx.data_dir / "bin", n, READY_WHEN_STARTED)
    comps = {n: FileReadyComponent(ctx, n) for n in ("store", "api", "ctrl", "sched")}
    mgr = ComponentManager([[comps["store"]], [comps["api"]], [comps["ctrl"], comps["sched"]]])
    mgr.start()
    up = {n: (ctx.data_dir / f"{n}.up").stat().st_mtime_ns for n in comps}
    assert up["store"] < up["api"] < min(up["ctrl"], up["sched"])
    assert list(mgr.ready_at) == ["store", "api", "ctrl", "sched"]
    pids = {n: c.supervisor.pid for n, c in comps.items()}
    assert all(pids.values())
    assert (ctx.run_dir / "api.pid").read_text().split()[0] == str(pids["api"])
    mgr.stop()
    down = {n: float((ctx.data_dir / f"{n}.down").read_text()) for n in comps}
    assert max(down["ctrl"], down["sched"]) < down["api"] < down["store"]
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    mgr.stop()  # again: harmless


def test_a_stop_that_fails_is_logged_and_the_others_still_stop() -> None:
    from mke.components.base import Component
    from tests.support import logs

    class Broken(Component):
        name = "broken"

        def stop(self) -> None:
            raise OSError("device busy")

    class Fine(Component):
        name = "fine"
        stopped = False

        def stop(self) -> None:
            self.stopped = True

    buf = io.StringIO()
    fine = Fine()
    mgr = ComponentManager([[fine], [Broken()]], sink=LogSink(buf))
    mgr.start()
    mgr.stop()
    assert fine.stopped
    assert [(x.level, x.tagged) for x in logs.parse(buf.getvalue())] == [
        ("error", "[broken] stop failed: OSError: device busy")]


def test_component_never_ready_undoes_partial_start(ctx: ControllerContext) -> None:
    fake_binary(ctx.data_dir / "bin", "store", READY_WHEN_STARTED)
    fake_binary(ctx.data_dir / "bin", "api", "import time\nprint('waiting for nothing', flush=True)\ntime.sleep(60)")
    store, api = FileReadyComponent(ctx, "store"), FileReadyComponent(ctx, "api", timeout=0.5)
    later = FileReadyComponent(ctx, "later")
    fake_binary(ctx.data_dir / "bin", "later", READY_WHEN_STARTED)
    mgr = ComponentManager([[store], [api], [later]])
    with pytest.raises(ComponentError, match=r"api not ready after 0s \(last log: waiting for nothing\)"):
        mgr.start()
    assert (ctx.data_dir / "store.down").exists()  # the started one was stopped
    assert not (ctx.data_dir / "later.up").exists()  # the next one never started
    assert mgr.started == []


def test_crashing_component_fails_fast_with_its_log(ctx: ControllerContext) -> None:
    fake_binary(ctx.data_dir / "bin", "api", "import sys\nprint('bind: address already in use', flush=True)\nsys.exit(1)")
    api = FileReadyComponent(ctx, "api", timeout=60)
    t0 = time.monotonic()
    with pytest.raises(ComponentError, match="api did not become ready: api exited 4 times.*address already in use"):
        ComponentManager([[api]]).start()
    assert time.monotonic() - t0 < 20


def test_init_failure_starts_nothing(ctx: ControllerContext) -> None:
    fake_binary(ctx.data_dir / "bin", "store", READY_WHEN_STARTED)
    store, ghost = FileReadyComponent(ctx, "store"), FileReadyComponent(ctx, "ghost-binary")
    os.environ.pop("PATH_FOR_TEST", None)
    with pytest.raises(StagingError, match="ghost-binary: not found"):
        ComponentManager([[store], [ghost]]).start()
    assert not (ctx.data_dir / "store.up").exists()


FIRST_MKE = """
import io, sys, time
from pathlib import Path
from mke.components.context import ControllerContext
from mke.components.manager import ComponentManager
from mke.config import parse_config
from mke.node.binaries import BinaryResolver
from mke.logsink import LogSink
from tests.unit.mke.components.test_components import FileReadyComponent
d = Path(sys.argv[1])
ctx = ControllerContext(config=parse_config({}), data_dir=d, node_name="ctl-1", api_address="192.0.2.10",
                        binaries=BinaryResolver(d / "bin", user_bin_dir=True), sink=LogSink(io.StringIO()))
ComponentManager([[FileReadyComponent(ctx, "store")]]).start()
print("started", flush=True)
time.sleep(600)
"""


def test_stale_components_from_a_killed_mke_are_stopped_first(ctx: ControllerContext) -> None:
    import subprocess

    fake_binary(ctx.data_dir / "bin", "store", READY_WHEN_STARTED)
    # the first mke runs in a process of its own, which is then killed -9 (its component lives on)
    repo = Path(__file__).resolve().parents[4]
    first = subprocess.Popen([sys.executable, "-c", FIRST_MKE, str(ctx.data_dir)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "started"
        old_pid = int((ctx.data_dir / "store.up").read_text())
    finally:
        first.kill()
        first.wait()
    assert os.path.exists(f"/proc/{old_pid}")
    (ctx.data_dir / "store.up").unlink()
    second = ComponentManager([[FileReadyComponent(ctx, "store")]])
    second.init()
    second.stop_stale()
    assert (ctx.data_dir / "store.down").exists()
    try:
        os.waitpid(old_pid, 0)  # reaped here when pytest is its subreaper (tests/conftest.py)
    except ChildProcessError:
        pass
    assert not os.path.exists(f"/proc/{old_pid}") or open(f"/proc/{old_pid}/stat").read().split()[2] == "Z"
    second.start(init=False)
    try:
        assert int((ctx.data_dir / "store.up").read_text()) != old_pid
    finally:
        second.stop()


# ---------------------------------------------------------------- flags


def _flags(c: SupervisedComponent) -> dict[str, str | None]:
    c.binary_path = Path("/usr/bin/true")
    return {a.split("=", 1)[0]: (a.split("=", 1)[1] if "=" in a else None) for a in c.process_spec().args[1:]}


def test_apiserver_secure_defaults(ctx: ControllerContext) -> None:
    f = _flags(KubeAPIServer(ctx, etcd_servers="https://127.0.0.1:2379"))
    assert f["--anonymous-auth"] == "false"
    assert f["--authorization-mode"] == "Node,RBAC"
    assert f["--enable-bootstrap-token-auth"] == "true"
    assert f["--client-ca-file"].endswith("pki/client-ca.crt")  # never the server CA the tokens pin
    assert f["--kubelet-certificate-authority"].endswith("pki/kubelet-serving-ca.crt")
    assert f["--tls-cert-file"].endswith("pki/apiserver.crt")
    assert f["--etcd-certfile"].endswith("apiserver-etcd-client.crt")
    assert f["--service-cluster-ip-range"] == "10.96.0.0/12"
    assert f["--advertise-address"] == "192.0.2.10"
    assert f["--tls-min-version"] == "VersionTLS12"
    assert f["--enable-admission-plugins"] == "NodeRestriction,DenyServiceExternalIPs,EventRateLimit"  # CIS 1.2.3, 1.2.9, 1.2.14
    assert f["--service-account-extend-token-expiration"] == "false"  # CIS 1.2.30
    assert "--egress-selector-config-file" in f
    assert not any(k.startswith("--insecure") for k in f)


def test_apiserver_encrypts_secrets_audits_and_admits_pods(ctx: ControllerContext) -> None:
    import yaml

    api = KubeAPIServer(ctx, etcd_servers="https://127.0.0.1:2379")
    f = _flags(api)
    assert f["--encryption-provider-config"] == str(ctx.data_dir / "pki" / "secrets-encryption.key")
    assert f["--audit-log-path"] == str(ctx.data_dir / "kube-apiserver" / "audit" / "audit.log")
    assert (f["--audit-log-maxage"], f["--audit-log-maxbackup"], f["--audit-log-maxsize"]) == ("30", "10", "100")
    api.binary_path = None
    api.ctx.binaries = BinaryResolver(Path("/usr/bin"), user_bin_dir=True)
    api.binary = "true"
    api.init()
    for name in ("--audit-policy-file", "--admission-control-config-file"):
        path = Path(f[name])
        assert path.parent == ctx.data_dir / "kube-apiserver"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((ctx.data_dir / "kube-apiserver").stat().st_mode) == 0o700
    assert stat.S_IMODE((ctx.data_dir / "kube-apiserver" / "audit").stat().st_mode) == 0o700
    policy = yaml.safe_load(Path(f["--audit-policy-file"]).read_text())
    levels = {r["level"] for r in policy["rules"]}
    assert levels <= {"None", "Metadata"}, "no rule may log request or response bodies"
    assert policy["rules"][-1] == {"level": "Metadata"}
    psa = yaml.safe_load(Path(f["--admission-control-config-file"]).read_text())["plugins"][0]
    assert psa["name"] == "PodSecurity"
    conf = psa["configuration"]
    assert (conf["defaults"]["enforce"], conf["defaults"]["warn"], conf["defaults"]["audit"]) == (
        "baseline", "restricted", "restricted")
    assert conf["exemptions"]["namespaces"] == ["kube-system"]


TLS_FLAGS = {"kube-apiserver": ("--tls-min-version", "--tls-cipher-suites"),
             "kube-controller-manager": ("--tls-min-version", "--tls-cipher-suites"),
             "kube-scheduler": ("--tls-min-version", "--tls-cipher-suites"),
             "konnectivity-server": ("--tls-min-version", "--cipher-suites"),
             "etcd": ("--tls-min-version", "--cipher-suites")}


def test_every_tls_server_gets_tls12_and_ecdhe_aes_gcm_only(ctx: ControllerContext) -> None:
    from mke.components.konnectivity import KonnectivityServer
    from mke.components.scheduler import KubeScheduler
    from mke.node.tls import GO_CIPHER_SUITES

    for comp in (KubeAPIServer(ctx, etcd_servers="https://127.0.0.1:2379"), KubeControllerManager(ctx),
                 KubeScheduler(ctx), KonnectivityServer(ctx), Etcd(ctx)):
        version_flag, suites_flag = TLS_FLAGS[comp.name]
        f = _flags(comp)
        assert f[version_flag] in ("VersionTLS12", "TLS1.2"), comp.name
        suites = f[suites_flag].split(",")
        assert suites == list(GO_CIPHER_SUITES), comp.name
    for s in GO_CIPHER_SUITES:
        assert s.startswith("TLS_ECDHE_") and "_GCM_" in s


def test_extra_args_override_and_extend(tmp_path: Path) -> None:
    cfg = parse_config({"extraArgs": {"kube-apiserver": {"v": 3, "anonymous-auth": True}},
                        "konnectivity": {"enabled": False}})
    c = ControllerContext(config=cfg, data_dir=tmp_path, node_name="n", api_address="192.0.2.1",
                    binaries=BinaryResolver(tmp_path))
    f = _flags(KubeAPIServer(c, etcd_servers="https://127.0.0.1:2379"))
    assert f["--v"] == "3" and f["--anonymous-auth"] == "true"
    assert "--egress-selector-config-file" not in f


def test_apiserver_collects_garbage_at_half_and_extra_env_changes_it(tmp_path: Path) -> None:
    def env(cfg: dict, memory: int = 8 << 30) -> dict[str, str]:
        c = ControllerContext(config=parse_config(cfg), data_dir=tmp_path, node_name="n", api_address="192.0.2.1",
                              binaries=BinaryResolver(tmp_path), memory=memory)
        api = KubeAPIServer(c, etcd_servers="https://127.0.0.1:2379")
        api.binary_path = tmp_path / "kube-apiserver"
        return dict(api.process_spec().env)

    assert env({})["GOGC"] == "50"
    assert env({"extraEnv": {"kube-apiserver": {"GOGC": 100, "GOMEMLIMIT": "2GiB"}}}) == {
        "GOGC": "100", "GOMEMLIMIT": "2GiB"}
    assert env({"extraEnv": {"kube-scheduler": {"GOGC": 80}}})["GOGC"] == "50"
    # a controller with 4 GiB or less: a quarter, unless extraEnv says otherwise
    assert env({}, memory=4 << 30)["GOGC"] == "25" and env({}, memory=(4 << 30) + 1)["GOGC"] == "50"
    assert env({"extraEnv": {"kube-apiserver": {"GOGC": 100}}}, memory=2 << 30)["GOGC"] == "100"
    assert env({}, memory=0)["GOGC"] == "50"  # memory unknown (no /proc/meminfo): not small


def test_etcd_keeps_upstreams_gogc_but_on_a_small_controller(tmp_path: Path) -> None:
    from mke.storage.etcd import Etcd

    def env(cfg: dict, memory: int) -> dict[str, str]:
        c = ControllerContext(config=parse_config(cfg), data_dir=tmp_path, node_name="n", api_address="192.0.2.1",
                              binaries=BinaryResolver(tmp_path), memory=memory)
        etcd = Etcd(c)
        etcd.binary_path = tmp_path / "etcd"
        return dict(etcd.process_spec().env)

    assert "GOGC" not in env({}, 8 << 30)
    assert env({}, 2 << 30)["GOGC"] == "50"
    assert env({"extraEnv": {"etcd": {"GOGC": "80"}}}, 2 << 30)["GOGC"] == "80"


def test_etcd_mutual_tls(ctx: ControllerContext) -> None:
    f = _flags(Etcd(ctx))
    assert f["--client-cert-auth"] == "true" and f["--peer-client-cert-auth"] == "true"
    assert f["--listen-client-urls"] == "https://127.0.0.1:2379"
    assert f["--listen-peer-urls"] == "https://192.0.2.10:2380"
    assert f["--initial-cluster"] == "ctl-1=https://192.0.2.10:2380"
    assert f["--initial-cluster-state"] == "new"


def test_kine_listens_on_a_unix_socket_in_the_run_dir(ctx: ControllerContext) -> None:
    k = Kine(ctx)
    f = _flags(k)
    assert f["--listen-address"] == f"unix://{ctx.run_dir}/kine.sock"
    endpoint = k.process_spec().env["KINE_ENDPOINT"]
    assert endpoint.startswith(f"sqlite://{ctx.data_dir}/kine/state.db?")
    assert "_txlock=immediate" in endpoint
    assert f["--metrics-bind-address"] == "0"


def test_kine_gets_the_data_source_in_its_environment_never_on_its_command_line(tmp_path: Path) -> None:
    dsn = "postgres://kine:s3cretpw@db.example:5432/kine"
    cfg = parse_config({"storage": {"type": "kine", "kine": {"dataSource": dsn}}})
    c = ControllerContext(config=cfg, data_dir=tmp_path, node_name="n", api_address="192.0.2.1",
                          binaries=BinaryResolver(tmp_path))
    k = Kine(c)
    k.binary_path = Path("/usr/bin/true")
    spec = k.process_spec()
    assert not any("s3cretpw" in a for a in spec.args)
    assert "--endpoint" not in _flags(k)
    assert spec.env["KINE_ENDPOINT"] == dsn


def test_controller_manager_signs_kubelet_certs_with_the_client_and_kubelet_serving_cas(ctx: ControllerContext) -> None:
    f = _flags(KubeControllerManager(ctx))
    assert f["--cluster-signing-kubelet-client-cert-file"].endswith("pki/client-ca.crt")
    assert f["--cluster-signing-kubelet-client-key-file"].endswith("pki/client-ca.key")
    assert f["--cluster-signing-kube-apiserver-client-cert-file"].endswith("pki/client-ca.crt")
    assert f["--cluster-signing-kubelet-serving-cert-file"].endswith("pki/kubelet-serving-ca.crt")
    assert f["--cluster-signing-kubelet-serving-key-file"].endswith("pki/kubelet-serving-ca.key")
    # nothing is signed with the server CA: no legacy signer, no legacy-unknown signer
    assert "--cluster-signing-cert-file" not in f and "--cluster-signing-legacy-unknown-cert-file" not in f
    assert not any(v and v.endswith("pki/ca.key") for v in f.values())
    assert f["--root-ca-file"].endswith("pki/ca.crt")  # pods verify the apiserver with the server CA
    assert f["--client-ca-file"].endswith("pki/client-ca.crt")
    assert "tokencleaner" in f["--controllers"] and "bootstrapsigner" in f["--controllers"]
    assert f["--bind-address"] == "127.0.0.1"


# ---------------------------------------------------------------- binaries


def test_resolver_prefers_user_bin_dir_then_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = fake_binary(tmp_path / "bin", "etcd", "pass")
    on_path = fake_binary(tmp_path / "path", "kine", "pass")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    r = BinaryResolver(tmp_path / "bin", user_bin_dir=True)
    assert r.path("etcd") == mine
    assert r.path("kine") == on_path
    with pytest.raises(StagingError, match=r"nope: not found in .*bin or PATH"):
        r.path("nope")
    # a non-executable file is not taken
    (tmp_path / "bin" / "plain").write_text("x")
    (tmp_path / "bin" / "plain").chmod(stat.S_IRUSR)
    with pytest.raises(StagingError):
        r.path("plain")
    assert shutil.which("etcd", path=str(tmp_path / "bin")) == str(mine)


def test_restart_restarts_in_order_with_new_processes(ctx: ControllerContext) -> None:
    for n in ("store", "api"):
        fake_binary(ctx.data_dir / "bin", n, READY_WHEN_STARTED)
    comps = [FileReadyComponent(ctx, "store"), FileReadyComponent(ctx, "api")]
    mgr = ComponentManager([[comps[0]], [comps[1]]])
    mgr.start()
    try:
        before = {c.name: c.supervisor.pid for c in comps}
        for n in ("store", "api"):
            (ctx.data_dir / f"{n}.up").unlink()
        assert mgr.restart() == ["store", "api"]
        after = {c.name: c.supervisor.pid for c in comps}
        assert all(after[n] and after[n] != before[n] for n in before)
        down = {n: float((ctx.data_dir / f"{n}.down").read_text()) for n in before}
        assert down["api"] < down["store"]
        assert mgr.restart({"api"}) == ["api"]
    finally:
        mgr.stop()
