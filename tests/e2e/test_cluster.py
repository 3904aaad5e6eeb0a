"""A cluster from one file (issues 4 and 12), in order: a controller and two workers, each a
kernel-only host (its root holds nothing but dist/mke: no shell, no libc, no iptables, no
iproute2, no kmod), air-gapped (no route to any registry). Every system image is built by
each node from the payload; the test image comes from <data-dir>/images.

Duration on the 2-core development machine: docs/airgap.md has the figures.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from mke.config import ImagesConfig
from tests.e2e.cluster import BASE, DATA, POD_LOGS, TESTAPP_IMAGE, dump
from tests.e2e.netns import InNetns
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.root]

NS = "default"
APP = "testapp"


def node_ready(core, name: str) -> bool:
    n = core.read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])


def app_pods(core):
    return core.list_namespaced_pod(NS, label_selector=f"app={APP}").items


def exec_in(kube, pod: str, *cmd: str, ns: str = NS) -> str:
    """stdout of ``cmd`` run in ``pod`` (through the apiserver, konnectivity and kubelet); raises unless it exits 0."""
    from kubernetes import client
    from kubernetes.stream import stream

    resp = stream(client.CoreV1Api(kube).connect_get_namespaced_pod_exec, pod, ns, command=list(cmd),
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    try:
        resp.run_forever(timeout=30)
        out, err, rc = resp.read_stdout(), resp.read_stderr(), resp.returncode
    finally:
        resp.close()
    if rc != 0:
        raise AssertionError(f"{' '.join(cmd)} in {pod}: exit {rc}: {err.strip()}")
    return out


def report(name: str, value: object) -> None:
    print(f"[e2e] {name}: {value}", file=sys.stderr)
    path = BASE / "figures.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    doc[name] = value
    path.write_text(dump(doc))


# --------------------------------------------------------------------------- the cluster works


def test_hosts_are_kernel_only(cluster):
    """Each host's root holds only /mke and what mke wrote (under /var): no shell, libc or tools."""
    for name, root in cluster.roots.items():
        assert root.check_bare() == [], (name, root.check_bare())
        top = sorted(p.name for p in root.root.iterdir())
        assert set(top) <= {"mke", "proc", "sys", "dev", "run", "tmp", "var", "etc"}, top
        if (root.root / "etc").exists():  # written by mke's worker, and recorded for mke reset
            made = json.loads((cluster.data_dir(name) / "worker" / "host-files.json").read_text())
            assert {Path(p).name for p in made if made[p] != "dir"} == {"passwd", "group", "hosts", "resolv.conf",
                                                                         "rt_tables"}  # kube-router's
    for tool in ("sh", "iptables", "ip", "modprobe", "mount"):  # mke carries its own tools in its data dir only
        found = [n for n, r in cluster.roots.items() for d in ("bin", "sbin", "usr/bin", "usr/sbin")
                 if (r.root / d / tool).exists()]
        assert not found, (tool, found)
    # and no route to a registry: the only default route leads to an address nobody has
    with InNetns("mke-e2e-w1"):
        from mke.node import netlink
        assert netlink.route_source("10.200.0.254") == "10.200.0.2"


def test_both_nodes_ready(cluster, core):
    names = sorted(n.metadata.name for n in core.list_node().items)
    assert names == ["w1", "w2"]  # the controller is isolated: no kubelet there
    for n in names:
        assert node_ready(core, n)
    report("seconds from `mke worker` to node Ready", cluster.ready_seconds)
    for name in ("w1", "w2"):
        report(f"worker {name} RSS (KiB) after Ready", cluster.worker_rss(name))
        status = json.loads((cluster.data_dir(name) / "run" / "status.json").read_text())
        report(f"worker {name} start-up: seconds from start to each step ready", {
            "prepare (token check, prerequisites, staging)": status.get("prepare_seconds"),
            **{c["name"]: c.get("ready_after_s") for c in status["components"]}})
    node = core.read_node("w1")
    addrs = {a.type: a.address for a in node.status.addresses}
    assert addrs["InternalIP"] == "10.200.0.2"
    assert node.spec.pod_cidr


def test_tls_bootstrap_and_serving_certificates(cluster, kube):
    """Each kubelet got its client certificate through an approved CSR (bootstrap token), rotates it,
    and has a serving certificate approved by the controller."""
    from kubernetes import client

    def approved(signer: str, user: str) -> bool:
        csrs = client.CertificatesV1Api(kube).list_certificate_signing_request().items
        return any(c.spec.signer_name == signer and c.status.certificate and user in (c.spec.username or "")
                   and any(cond.type == "Approved" for cond in c.status.conditions or []) for c in csrs)

    assert approved("kubernetes.io/kube-apiserver-client-kubelet", "system:bootstrap:")
    for name in ("w1", "w2"):
        # kubelet asks for its serving certificate once registered; the controller approves it
        wait_until(f"{name}'s serving CSR approved and issued",
                   lambda n=name: approved("kubernetes.io/kubelet-serving", f"system:node:{n}"), timeout=120)
        pki = cluster.data_dir(name) / "worker" / "pki"
        assert (pki / "kubelet-client-current.pem").is_symlink()  # kubelet's rotating certificate
        wait_until("kubelet's serving certificate on disk", (pki / "kubelet-server-current.pem").is_symlink, timeout=60)
        inner = DATA / "worker" / "pki" / "kubelet-client-current.pem"  # the path as the host sees it
        assert str(inner) in (cluster.data_dir(name) / "worker" / "kubelet.conf").read_text()


def test_each_kubelet_runs_with_the_cis_settings(cluster, core):
    """CIS 4.2.x as the running kubelets report them (/configz through the API and konnectivity),
    and the kernel settings kubelet protects (4.2.6) as the hosts have them."""
    for name in ("w1", "w2"):
        raw = core.connect_get_node_proxy_with_path(name, "configz", _preload_content=False).data
        cfg = json.loads(raw)["kubeletconfig"]
        assert cfg["protectKernelDefaults"] is True, name  # 4.2.6: mke set the values first
        assert cfg["authentication"]["anonymous"]["enabled"] is False  # 4.2.1
        assert cfg["authorization"]["mode"] == "Webhook"  # 4.2.2
        assert cfg.get("readOnlyPort", 0) == 0  # 4.2.4
        assert cfg["rotateCertificates"] is True and cfg["serverTLSBootstrap"] is True  # 4.2.10-12
        assert cfg["tlsCipherSuites"] and cfg["tlsMinVersion"] == "VersionTLS12"  # 4.2.13
        assert cfg["podPidsLimit"] == 4096  # 4.2.14
        assert cfg["seccompDefault"] is True  # 4.2.15
    from mke.worker.host import KUBELET_SYSCTLS

    for key, want in KUBELET_SYSCTLS.items():  # global kernel settings: the same seen from any host
        assert Path("/proc/sys", key.replace(".", "/")).read_text().strip() == want, key


def test_deployment_of_a_local_image_runs_on_both_nodes(cluster, kube, core):
    from kubernetes import client

    apps = client.AppsV1Api(kube)
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "namespace": NS},
        "spec": {
            "replicas": 3, "selector": {"matchLabels": {"app": APP}},
            "template": {"metadata": {"labels": {"app": APP}}, "spec": {
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                               "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": APP}}}],
                "containers": [{"name": APP, "image": TESTAPP_IMAGE, "imagePullPolicy": "Never",
                                "args": ["serve"], "ports": [{"containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2}}]}},
        },
    }
    apps.create_namespaced_deployment(NS, dep)
    core.create_namespaced_service(NS, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": APP},
        "spec": {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]}})
    t0 = time.monotonic()

    def running():
        pods = app_pods(core)
        ok = [p for p in pods if p.status.phase == "Running" and all(c.ready for c in p.status.container_statuses or [])]
        return pods if len(ok) == 3 else None

    pods = wait_until("3 testapp pods Running and ready", running, timeout=240)
    report("seconds for 3 replicas of a local image to be ready", round(time.monotonic() - t0, 1))
    assert {p.spec.node_name for p in pods} == {"w1", "w2"}


def test_system_pods_run_from_the_images_each_node_built(cluster, core):
    def all_ready():
        pods = core.list_namespaced_pod("kube-system").items
        bad = [f"{p.metadata.name}={p.status.phase}" for p in pods if p.status.phase != "Running"
               or not all(c.ready for c in p.status.container_statuses or [])]
        return pods if pods and not bad else None

    t0 = time.monotonic()
    pods = wait_until("kube-system pods Running and ready", all_ready, timeout=300)
    report("seconds until every kube-system pod is ready (after the test deployment)", round(time.monotonic() - t0, 1))
    images = {c.image for p in pods for c in p.spec.containers}
    assert any("coredns" in i for i in images)
    # kube-proxy and kube-router run on each worker as processes of mke, with the embedded tools
    for name in ("w1", "w2"):
        for component in ("kube-proxy", "kube-router"):
            assert os.path.exists(f"/proc/{cluster.component_pid(name, component)}"), (name, component)
    # nothing was pulled: every image is one a node built from its payload (or the test image)
    events = core.list_event_for_all_namespaces().items
    pulled = [e.message for e in events if e.reason == "Pulling"]
    assert not pulled, pulled
    built = {n: json.loads((cluster.data_dir(n) / "worker" / "system-images.json").read_text())["images"]
             for n in ("w1", "w2")}
    assert built["w1"] == built["w2"], built  # the same digests on every node
    assert {ImagesConfig().pause, ImagesConfig().coredns} <= set(built["w1"])  # the defaults = recipes/images
    report("system images each node built (ref: manifest digest)", built["w1"])
    for n in ("w1", "w2"):
        listing = cluster.ctr(n, "images", "list")
        for ref in built[n]:
            line = next(x for x in listing.splitlines() if x.startswith(ref + " "))
            assert built[n][ref] in line and "io.cri-containerd.pinned=pinned" in line, line


def test_clusterip_service_reachable_from_a_pod(cluster, kube, core):
    svc = core.read_namespaced_service(APP, NS)
    pod = app_pods(core)[0].metadata.name
    out = wait_until("HTTP to the ClusterIP", lambda: exec_in(kube, pod, "/testapp", "get", f"http://{svc.spec.cluster_ip}/"),
                     timeout=120)
    assert "testapp-" in out
    # repeated requests reach pods on both nodes (routes between the nodes' pod CIDRs)
    hosts = set()
    for _ in range(30):
        hosts.add(exec_in(kube, pod, "/testapp", "get", f"http://{svc.spec.cluster_ip}/").split()[0])
        if len(hosts) == 3:
            break
    assert len(hosts) >= 2, hosts


def _http_from_node(node: str, url: str) -> str:
    """GET ``url`` from host ``node`` itself (its network namespace): what a process on the node sees."""
    import urllib.request

    with InNetns(f"mke-e2e-{node}"):
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()


def test_nodeport_and_clusterip_from_pods_and_from_a_node(cluster, kube, core):
    core.create_namespaced_service(NS, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{APP}-np"},
        "spec": {"type": "NodePort", "selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]}})
    svc = core.read_namespaced_service(f"{APP}-np", NS)
    port = svc.spec.ports[0].node_port
    pod = app_pods(core)[0].metadata.name
    # from a pod, to the other node's NodePort, and from each node to itself and to the ClusterIP
    out = wait_until("NodePort from a pod", lambda: exec_in(kube, pod, "/testapp", "get", f"http://10.200.0.3:{port}/"),
                     timeout=120)
    assert out.startswith("testapp-")
    for node, addr in (("w1", "10.200.0.2"), ("w2", "10.200.0.3")):
        body = wait_until(f"NodePort from {node}", lambda a=addr, n=node: _http_from_node(n, f"http://{a}:{port}/"),
                          timeout=120)
        assert body.startswith("testapp-"), body
        body = wait_until(f"ClusterIP from {node}", lambda n=node: _http_from_node(n, f"http://{svc.spec.cluster_ip}/"),
                          timeout=120)
        assert body.startswith("testapp-"), body
    core.delete_namespaced_service(f"{APP}-np", NS)


def test_dns_through_coredns(cluster, kube, core):
    pod = app_pods(core)[0].metadata.name
    svc = core.read_namespaced_service(APP, NS)
    out = wait_until("DNS name of the service", lambda: exec_in(kube, pod, "/testapp", "lookup", f"{APP}.{NS}.svc.cluster.local"),
                     timeout=180)
    assert svc.spec.cluster_ip in out
    assert "10.96.0.1" in exec_in(kube, pod, "/testapp", "lookup", "kubernetes.default")
    body = exec_in(kube, pod, "/testapp", "get", f"http://{APP}/")  # search path + DNS + service
    assert "testapp-" in body


def test_logs_and_exec_through_konnectivity(cluster, kube, core):
    from kubernetes import client

    pods = app_pods(core)
    for p in pods:
        log = core.read_namespaced_pod_log(p.metadata.name, NS)
        assert "testapp serving on :8080" in log
        assert exec_in(kube, p.metadata.name, "/testapp", "echo", "hello", p.spec.node_name).strip() == f"hello {p.spec.node_name}"
    # the same through kubectl (mke kubectl, on the controller)
    name = pods[0].metadata.name
    out = cluster.kubectl("exec", name, "--", "/testapp", "echo", "via-kubectl")
    assert out.stdout.strip() == "via-kubectl"
    out = cluster.kubectl("logs", name)
    assert "serving" in out.stdout
    # the apiserver reaches kubelets only through konnectivity: agents are connected
    agents = [p for p in core.list_namespaced_pod("kube-system").items if "konnectivity" in p.metadata.name]
    assert agents and all(p.status.phase == "Running" for p in agents)
    assert client.CoreV1Api(kube)


def test_metrics_api_answers(cluster, kube):
    from kubernetes import client

    co = client.CustomObjectsApi(kube)

    def node_metrics():
        items = co.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")["items"]
        return items if {i["metadata"]["name"] for i in items} == {"w1", "w2"} else None

    items = wait_until("metrics.k8s.io nodes", node_metrics, timeout=300, interval=5)
    assert all(i["usage"]["memory"] for i in items)
    pods = wait_until("metrics.k8s.io pods", lambda: co.list_namespaced_custom_object(
        "metrics.k8s.io", "v1beta1", NS, "pods")["items"], timeout=180, interval=5)
    assert pods


# --------------------------------------------------------------------------- certificate rotation (issue 19.5)

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "konnectivity-server")


def _served(host: str, port: int, client: tuple[Path, Path] | None = None) -> bytes | None:
    from mke.commands.certificate import served_certificate

    return served_certificate(host, port, client=client)


def _der(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)


def test_certificate_rotation_without_restarts_and_without_a_failed_request(cluster, kube, core):
    """``mke certificate rotate`` on the running controller: every leaf gets a new key; the API
    answers every request sampled each 100 ms (a new TLS connection with the admin certificate
    made before the rotation, and the kubernetes client's pooled one); no component restarts
    (konnectivity-server too: mke's patch makes it reload its agent-facing pair); the new
    certificates are what each endpoint serves; logs/exec keep working through the agents'
    connections made before the rotation."""
    import http.client
    import ssl
    import threading

    import yaml

    pids = {c: cluster.component_pid("ctl", c) for c in CONTROL_PLANE}
    mke_pid = cluster.controller.pid
    pki = cluster.outside("ctl", DATA / "pki")
    old = {n: _der(pki / f"{n}.crt") for n in ("apiserver", "mke-api", "konnectivity", "etcd/peer")}
    # a TLS client with the admin certificate as it was before the rotation (still valid after it)
    user = yaml.safe_load(cluster.kubeconfig.read_text())["users"][0]["user"]
    import base64
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="mke-rotate-"))
    (tmp / "admin.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (tmp / "admin.key").write_bytes(base64.b64decode(user["client-key-data"]))
    os.chmod(tmp / "admin.key", 0o600)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(tmp / "admin.crt"), str(tmp / "admin.key"))
    from kubernetes import client as kclient

    pooled = kclient.CoreV1Api(kube)
    samples: list[tuple[float, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            t = time.monotonic()
            try:
                conn = http.client.HTTPSConnection("10.200.0.1", 6443, context=ctx, timeout=5)
                conn.request("GET", "/api/v1/namespaces/default")
                status = conn.getresponse().status
                conn.close()
                if status != 200:
                    failures.append(f"{t:.1f} new connection: HTTP {status}")
                pooled.read_namespace("default", _request_timeout=5)
                samples.append((t, "ok"))
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                failures.append(f"{t:.1f} {type(e).__name__}: {e}")

    sampler = threading.Thread(target=sample, daemon=True)  # made in the client namespace: it inherits it
    sampler.start()
    try:
        time.sleep(2)
        t0 = time.monotonic()
        r = cluster.run("ctl", "certificate", "rotate", "--data-dir", str(DATA), "--json", timeout=300)
        took = time.monotonic() - t0
        time.sleep(5)
    finally:
        stop.set()
        sampler.join(timeout=15)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    rep = json.loads(r.stdout)
    report("certificate rotation: seconds for mke certificate rotate (rotate, apply, seen over TLS)", round(took, 1))
    report("certificate rotation: API requests sampled every 100 ms / failed", [len(samples), len(failures)])
    assert not failures, failures[:10]
    assert len(samples) >= 20
    assert set(rep["rotated"]) >= {"apiserver", "etcd/server", "etcd/peer", "konnectivity", "mke-api", "admin",
                                   "controller-manager", "scheduler"}
    assert rep["restarted"] == []
    assert rep["serving"] and all(v["new"] for v in rep["serving"].values()), rep["serving"]
    # pids: the same processes
    now = {c: cluster.component_pid("ctl", c) for c in CONTROL_PLANE}
    assert now == pids
    assert cluster.controller.pid == mke_pid and cluster.controller.alive()
    # seen from the client's network: the new certificates are served
    for name, port, client in (("apiserver", 6443, None), ("mke-api", 9443, None), ("konnectivity", 8132, None),
                               ("etcd/peer", 2380, (pki / "etcd" / "peer.crt", pki / "etcd" / "peer.key"))):
        served = _served("10.200.0.1", port, client)
        assert served == _der(pki / f"{name}.crt") and served != old[name], name
    # the node's kubelets still talk to the API, and logs/exec go through konnectivity at once
    # (nothing restarted, so the agents never had to reconnect)
    assert node_ready(core, "w1") and node_ready(core, "w2")
    for pod in app_pods(core):
        node = pod.spec.node_name
        assert exec_in(kube, pod.metadata.name, "/testapp", "echo", "rotated", node).strip() == f"rotated {node}"


# --------------------------------------------------------------------------- NetworkPolicy (kube-router)

NP = "np-test"


def _np_pod(name: str, node: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NP, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": TESTAPP_IMAGE, "imagePullPolicy": "Never",
                                                       "args": ["serve"], "ports": [{"containerPort": 8080}]}]}}


def _policy_state(cluster, node: str) -> str:
    """kube-router's policy chains and ipsets on ``node`` (read with the build's static tools), for a failure."""
    import subprocess

    from tests.e2e.cluster import arch, dist

    bins = dist() / f"linux-{arch()}" / "bin"
    netns = f"--net=/run/netns/{cluster.host(node).netns}"
    def save(table: str) -> list[str]:
        return subprocess.run(["nsenter", netns, "--", str(bins / "xtables-nft-multi"), "iptables-save", "-c", "-t", table],
                              capture_output=True, text=True, timeout=60, check=False).stdout.splitlines()

    sets = subprocess.run(["nsenter", netns, "--", str(bins / "ipset"), "list"], capture_output=True, text=True,
                          timeout=60, check=False).stdout
    # the whole path a packet takes through kube-router's chains (FORWARD, the pod firewalls and
    # the policy chains with their counters), and what NAT may do to the pod's source address
    filtered = [x for x in save("filter") if "KUBE-ROUTER" in x or "POD-FW" in x or "NWPLCY" in x or "FORWARD" in x]
    nat = [x for x in save("nat") if "POSTROUTING" in x or "MASQ" in x]
    return "\n".join([f"{node} policy rules:", *filtered, f"{node} nat:", *nat, f"{node} ipsets:", sets])


def _reaches(kube, src: str, dst: str, ip: dict[str, str]) -> bool:
    """Pod ``src`` gets an HTTP answer from pod ``dst`` (the answer names the pod that served it)."""
    try:
        return exec_in(kube, src, "/testapp", "get", f"http://{ip[dst]}:8080/", ns=NP).split()[0] == dst
    except AssertionError:
        return False


def test_network_policy_default_deny_then_exactly_the_allowed_path(cluster, kube, core):
    """Pods on both nodes: traffic flows; a default-deny policy stops it both ways; an allow rule
    opens exactly server <- allowed-client on 8080, nothing else (kube-router's firewall)."""
    from kubernetes import client

    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NP}})
    pods = {"server": ("w1", {"app": "server"}), "allowed": ("w2", {"role": "allowed"}), "other": ("w2", {"role": "other"})}
    for name, (node, labels) in pods.items():
        core.create_namespaced_pod(NP, _np_pod(name, node, labels))

    def ips():
        got = {n: core.read_namespaced_pod(n, NP).status for n in pods}
        return {n: st.pod_ip for n, st in got.items()} if all(st.phase == "Running" and st.pod_ip for st in got.values()) else None

    ip = wait_until("policy test pods Running", ips, timeout=180)
    assert _reaches(kube, "allowed", "server", ip) and _reaches(kube, "server", "allowed", ip)  # open by default

    net = client.NetworkingV1Api(kube)
    net.create_namespaced_network_policy(NP, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    t0 = time.monotonic()
    wait_until("default-deny enforced (allowed -> server blocked)", lambda: not _reaches(kube, "allowed", "server", ip),
               timeout=120, interval=1)
    report("seconds until a default-deny NetworkPolicy is enforced", round(time.monotonic() - t0, 1))
    assert not _reaches(kube, "server", "allowed", ip)  # the other way too
    assert not _reaches(kube, "other", "server", ip)

    net.create_namespaced_network_policy(NP, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-allowed"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "allowed"}}}],
                              "ports": [{"protocol": "TCP", "port": 8080}]}]}})
    t0 = time.monotonic()
    try:
        wait_until("allowed -> server restored", lambda: _reaches(kube, "allowed", "server", ip), timeout=120, interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_policy_state(cluster, 'w1')}\n{_policy_state(cluster, 'w2')}") from None
    report("seconds until an allow rule is enforced", round(time.monotonic() - t0, 1))
    assert not _reaches(kube, "other", "server", ip)  # exactly the allowed path
    assert not _reaches(kube, "server", "allowed", ip)
    core.delete_namespace(NP)


# --------------------------------------------------------------------------- faults


def _pod_uids(core) -> set[str]:
    return {p.metadata.uid for p in app_pods(core)}


@pytest.mark.parametrize("component", ["containerd", "kubelet"])
def test_kill_9_is_restarted_and_pods_survive(cluster, core, component):
    before_uids = _pod_uids(core)
    old = cluster.component_pid("w1", component)
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    new = wait_until(f"{component} restarted", lambda: (p := cluster.component_pid("w1", component)) != old and
                     os.path.exists(f"/proc/{p}") and p, timeout=60, interval=0.5)
    assert new != old
    wait_until("w1 Ready", lambda: node_ready(core, "w1"), timeout=180)

    def all_running():
        pods = app_pods(core)
        return len([p for p in pods if p.status.phase == "Running"]) == 3
    wait_until("3 pods Running", all_running, timeout=180)
    report(f"seconds until w1 Ready and pods Running after kill -9 {component}", round(time.monotonic() - t0, 1))
    # pods keep running (containers are not children of containerd or kubelet)
    assert _pod_uids(core) == before_uids
    assert cluster.workers["w1"].alive()


def test_worker_restart_rejoins_without_token(cluster, core):
    w = cluster.workers["w2"]
    assert w.stop() == 0
    since = len(w.text())
    p = cluster.start_worker("w2", None, [])
    seconds = cluster.wait_worker_ready("w2", since=since)
    assert "ignoring the token" not in p.text()[since:]
    report("seconds to Ready when a joined worker restarts (no token)", seconds)
    wait_until("w2 Ready", lambda: node_ready(core, "w2"), timeout=120)
    assert not (cluster.data_dir("w2") / "worker" / "bootstrap-kubelet.conf").exists()


def _gc_bait(path: Path) -> str:
    """An image nothing uses and nobody pinned: kubelet's image GC must remove it (the proof it ran)."""
    from mke.images import oci

    ref = "e2e.local/gc-bait:1"
    blobs = path.parent / "gc-bait-blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / "bait").write_text(f"bait {time.time()}\n")
    layer = oci.build_layer([oci.binary_entry("/bait", blobs / "bait", mode=0o644)], blobs, comment="bait")
    oci.write_archive([oci.build_image(ref, [layer], oci.ImageConfig(cmd=("/bait",)), blobs, arch="amd64")], path)
    return ref


def test_system_images_survive_forced_image_gc_and_a_restart(cluster, core):
    """kubelet's image GC forced (collect above 1% disk use, down to 0%, no minimum age) on a
    restarted w2: an unpinned unused image goes, every system image stays, no pod pulls."""
    data = cluster.data_dir("w2")
    (data / "tmp").mkdir(exist_ok=True)
    ref = _gc_bait(data / "tmp" / "gc-bait.tar")
    cluster.ctr("w2", "images", "import", str(DATA / "tmp" / "gc-bait.tar"))
    assert ref in cluster.ctr("w2", "images", "list", "-q").split()
    w = cluster.workers["w2"]
    assert w.stop() == 0
    since = len(w.text())
    t0 = time.monotonic()
    cluster.start_worker("w2", None, [], "--kubelet-arg=image-gc-high-threshold=1",
                         "--kubelet-arg=image-gc-low-threshold=0", "--kubelet-arg=minimum-image-ttl-duration=0s")
    cluster.wait_worker_ready("w2", since=since)
    # kubelet collects at start and then every 5 minutes (its fixed period); the first run can
    # fail while its filesystem stats warm up
    wait_until("kubelet's image GC removed the unpinned image",
               lambda: ref not in cluster.ctr("w2", "images", "list", "-q").split(), timeout=420, interval=5)
    report("seconds until kubelet's forced image GC ran on w2", round(time.monotonic() - t0, 1))
    built = json.loads((data / "worker" / "system-images.json").read_text())["images"]
    listing = cluster.ctr("w2", "images", "list")
    for r, digest in built.items():
        line = next((x for x in listing.splitlines() if x.startswith(r + " ")), None)
        assert line is not None, f"{r} is gone from w2 after image GC"
        assert digest in line and "io.cri-containerd.pinned=pinned" in line, line
    wait_until("w2 Ready", lambda: node_ready(core, "w2"), timeout=120)
    wait_until("3 app pods Running", lambda: len([p for p in app_pods(core) if p.status.phase == "Running"]) == 3,
               timeout=180)
    events = core.list_event_for_all_namespaces().items
    pulls = [f"{e.involved_object.name}: {e.reason} {e.message}" for e in events
             if e.reason in ("Pulling", "ErrImagePull", "ImagePullBackOff", "BackOff") and "image" in (e.message or "")]
    assert not pulls, pulls
    waiting = [(p.metadata.name, c.state.waiting.reason) for p in core.list_pod_for_all_namespaces().items
               for c in (p.status.container_statuses or []) if c.state.waiting is not None
               and c.state.waiting.reason in ("ImagePullBackOff", "ErrImagePull")]
    assert not waiting, waiting


# --------------------------------------------------------------------------- bad input


def _expired_token(text: str) -> str:
    import dataclasses
    import datetime as dt

    from mke.tokens import decode_token

    tok = decode_token(text)
    return dataclasses.replace(tok, expires=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).encode()


def _other_cluster_token(text: str, tmp) -> str:
    import dataclasses

    from mke import der
    from mke.pki import cert_pem, make_ca_cert, new_key
    from mke.tokens import decode_token

    ca = make_ca_cert(new_key(), "another-cluster-ca")
    return dataclasses.replace(decode_token(text), ca_pem=cert_pem(ca).decode(), ca_hash=der.ca_pin(cert_pem(ca))).encode()


@pytest.mark.parametrize("case", ["malformed", "another cluster", "expired", "controller token", "invalidated"])
def test_bad_tokens_fail_in_one_line_and_leave_nothing(cluster, case, tmp_path):
    good = cluster.token_text
    token = {
        "malformed": lambda: good[:40],
        "another cluster": lambda: _other_cluster_token(good, tmp_path),
        "expired": lambda: _expired_token(good),
        "controller token": lambda: cluster.token(role="controller"),
        "invalidated": lambda: _invalidated(cluster),
    }[case]()
    data = cluster.data_dir("bad")
    t0 = time.monotonic()
    proc = cluster.run("bad", "worker", token, "--data-dir", str(DATA), "--name", "bad", timeout=60, check=False)
    assert proc.returncode == 6, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mke: error: "), proc.stderr
    # no node state: the data dir holds at most runtime/, mke's own program staged to run at all
    assert not data.exists() or [p.name for p in data.iterdir()] == ["runtime"]
    report(f"bad token ({case})", f"{lines[0]} [{time.monotonic() - t0:.1f}s]")


def test_a_worker_token_joins_one_node_only(cluster, core):
    """w1's token on another host: the controller denies the new node's client CSR (the token is
    bound to w1), the worker stops with that reason in one line, and ``mke reset`` cleans the host."""
    t0 = time.monotonic()
    proc = cluster.run("bad", *cluster.worker_args("bad")[1:], cluster.token_text, timeout=300, check=False)
    try:
        lines = proc.stderr.strip().splitlines()
        errors = [x for x in lines if x.startswith("mke: error: ")]
        assert proc.returncode == 6, proc.stderr[-3000:]  # TokenError
        assert len(errors) == 1 and "one worker token per node" in errors[0], proc.stderr[-3000:]
        assert not any(n.metadata.name == "bad" for n in core.list_node().items)
        report("a used worker token on another node", f"{errors[0][:200]} [{time.monotonic() - t0:.1f}s]")
    finally:
        reset = cluster.run("bad", "reset", "--data-dir", str(DATA), "--cgroup-root", cluster.cgroup_root("bad"),
                            "--pod-logs-dir", str(POD_LOGS), timeout=300, check=False)
        assert reset.returncode == 0, reset.stderr
    assert cluster.leftovers("bad") == []


# --------------------------------------------------------------------------- konnectivity in HA (issue 14.5)

JOINED = {"ctl2": 6, "ctl3": 7}  # host -> last octet of its address


def _agent_daemonsets(kube) -> dict[str, object]:
    from kubernetes import client

    return {d.metadata.name: d for d in client.AppsV1Api(kube).list_namespaced_daemon_set(
        "kube-system", label_selector="k8s-app=konnectivity-agent").items}


def _through(address: str):
    """A kubernetes ApiClient that talks to the kube-apiserver at ``address`` only."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(BASE / "admin.conf"))
    api.configuration.host = f"https://{address}:6443"
    return api


def test_logs_and_exec_through_each_of_three_controllers(cluster, kube, core):
    """Two more controllers join (one at a time, tokens from files); mke then runs one
    konnectivity-agent DaemonSet per controller, so each kube-apiserver's own
    konnectivity-server has an agent on every node: logs and exec work through each of the
    three. A stopped controller's DaemonSet is deleted and the other two keep working."""
    t0 = time.monotonic()
    for name, index in JOINED.items():
        cluster.add_host(name, index)
    for name in JOINED:  # one at a time: etcd promotes one learner at a time
        token = cluster.token(role="controller", expiry="10m")
        cluster.join_controller(name, token).wait_for(r"control plane ready", 420)
    report("two controllers joined (seconds)", round(time.monotonic() - t0, 1))
    addresses = {"ctl": "10.200.0.1", **{n: f"10.200.0.{i}" for n, i in JOINED.items()}}
    want = {f"konnectivity-agent-{a.replace('.', '-')}" for a in addresses.values()}

    def every_agent_ready():
        ds = _agent_daemonsets(kube)
        return set(ds) == want and all(d.status.number_ready == 2 for d in ds.values())

    wait_until("one ready konnectivity-agent DaemonSet per controller (2 nodes each)", every_agent_ready,
               timeout=300, interval=3)
    pods = app_pods(core)
    assert {p.spec.node_name for p in pods} == {"w1", "w2"}

    def check_through(names: list[str]) -> None:
        from kubernetes import client

        for name in names:
            api = _through(addresses[name])
            try:
                for p in pods:
                    node = p.spec.node_name
                    said = f"{name} {node}"
                    wait_until(f"exec in {p.metadata.name} on {node} through {name}",
                               lambda pod=p.metadata.name, said=said, api=api:
                               exec_in(api, pod, "/testapp", "echo", *said.split()).strip() == said,
                               timeout=90, interval=2)
                    log = client.CoreV1Api(api).read_namespaced_pod_log(p.metadata.name, NS)
                    assert "testapp serving on :8080" in log, (name, node)
            finally:
                api.close()

    check_through(list(addresses))
    report("logs/exec through each of 3 controllers (seconds since the joins began)", round(time.monotonic() - t0, 1))
    # ctl3 stops: it leaves the kubernetes EndpointSlice, mke deletes its DaemonSet, and the
    # two others (etcd keeps quorum with 2 of 3) still reach every node
    assert cluster.joined["ctl3"].stop() == 0
    gone = "konnectivity-agent-10-200-0-7"
    wait_until(f"{gone} deleted after ctl3 stopped", lambda: gone not in _agent_daemonsets(kube), timeout=240, interval=3)
    assert set(_agent_daemonsets(kube)) == want - {gone}
    check_through(["ctl", "ctl2"])


def _invalidated(cluster) -> str:
    tok = cluster.token()
    cluster.run("ctl", "token", "invalidate", tok, "--data-dir", str(DATA))
    return tok


# --------------------------------------------------------------------------- reset


def test_reset_leaves_nothing_behind(cluster, core):
    """Stop w1, reset it, and check inside the host: no mounts, no processes, no cgroups, no links
    (kube-bridge, kube-dummy-if, tunnels, mke0), no routes of mke's, no KUBE-/CNI-/MKE- chains in
    either iptables flavour, no kube-router ipsets, no worker files."""
    w = cluster.workers["w1"]
    assert w.stop() == 0
    before = cluster.leftovers("w1")
    assert before, "a stopped worker leaves its pods running until reset"
    proc = cluster.run("w1", "reset", "--data-dir", str(DATA), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    after = cluster.leftovers("w1")
    report("w1 leftovers before reset (sample)", before[:8])
    assert after == [], after
    # the data dir holds nothing but runtime/: mke's own program, staged again to run `reset --check`
    assert [p.name for p in cluster.data_dir("w1").iterdir()] == ["runtime"]
