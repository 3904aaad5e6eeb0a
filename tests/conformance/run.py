"""The Kubernetes conformance suite against a cluster of the real ``dist/mke``.

    python -m tests.conformance [--storage etcd|kine] [--procs N] [--focus RE] [--update-docs]

(``nox -s conformance`` builds first, then runs this.) The cluster is the e2e one
(tests/e2e/cluster.py): a controller and two workers, each a kernel-only host (its own
network namespace and a root holding only ``/mke``), plus a client namespace that runs the
suite and an OCI registry (distribution's ``registry``, built from source) holding every
image the suite uses. Each worker gets the images twice: imported at start (air-gap
bundles, as our users run) and through a mirror of ``registry.k8s.io`` pointing at the
run's registry, for the tests that pull with ``PullPolicy: Always``.

As upstream's conformance image does: the ``[Conformance]`` tests without ``[Serial]``
in parallel (ginkgo, ``--procs``), then the ``[Serial]`` ones one at a time. Outputs in
the results directory: ``parallel/junit_01.xml``, ``serial/junit_01.xml``, ``e2e.log``,
``summary.md``, ``summary.json``, the cluster's logs. A run that fails still writes them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.conformance import ociregistry, report
from tests.conformance.quick import QUICK
from tests.conformance.quick import focus as quick_focus

REPO = Path(__file__).resolve().parents[2]
BASE = Path(os.environ.get("MKE_CONFORMANCE_DIR", "/var/tmp/mke-conformance"))
PREFIX = "mke-cf-"
BARE = ["ctl", "w1", "w2"]
CLIENT = "client"
REGISTRY_PORT = 5000
REGISTRIES_FILE = Path("/var/registries.yaml")  # inside each worker's root
MIRRORED = "registry.k8s.io"
DOC = REPO / "docs" / "conformance.md"


class UsageError(Exception):
    """Bad input or a machine that cannot run the suite: one line, exit 2."""


def log(msg: str) -> None:
    print(f"[conformance {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def kubernetes_version() -> str:
    import tomllib

    data = tomllib.loads((REPO / "recipes" / "kubernetes.toml").read_text())
    return str(data["version"])


def conformance_yaml(version: str) -> Path:
    """Upstream's list of conformance tests, from the module the suite was built from."""
    cache = Path(os.environ.get("MKE_CACHE_DIR") or Path.home() / ".cache" / "mke")
    path = cache / "gomod" / "k8s.io" / f"kubernetes@v{version}" / "test" / "conformance" / "testdata" / "conformance.yaml"
    if not path.is_file():
        raise UsageError(f"{path} is missing: build the suite first (`nox -s conformance-build`), "
                         "which downloads k8s.io/kubernetes into the build cache")
    return path


def preflight(args: argparse.Namespace) -> dict[str, Path]:
    from tests.e2e.bareroot import missing_host_tools
    from tests.e2e.cluster import arch, build_hint, mke_name

    if os.geteuid() != 0:
        raise UsageError("the conformance run needs root (network and mount namespaces, cgroups): run it with sudo")
    missing = [t for t in missing_host_tools() if t != "go"]
    if missing:
        raise UsageError(f"{', '.join(missing)} not found on PATH; install iproute2 and util-linux")
    dist = args.dist.resolve()
    suite = args.suite.resolve()
    need = {
        "mke": dist / mke_name(),  # dist/mke-fips with MKE_E2E_FIPS=1 (nox -s e2e-fips)
        "kubectl": dist / f"linux-{arch()}" / "bin" / "kubectl",
        "e2e.test": suite / "bin" / "e2e.test",
        "ginkgo": suite / "bin" / "ginkgo",
        "registry": suite / "bin" / "registry",
        "images": suite / "images",
    }
    for what, path in need.items():
        if not path.exists():
            hint = build_hint() if what in ("mke", "kubectl") else "nox -s conformance-build"
            raise UsageError(f"{path} is missing ({what}): run `{hint}` first")
    if not list(need["images"].glob("*.tar")):
        raise UsageError(f"{need['images']} holds no image archives: run `nox -s conformance-build` first")
    return need


def source_commit() -> str:
    """The commit dist/mke was built from, as far as the checkout tells (the run is of dist/mke)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"dist/mke of commit {out}" if out else "dist/mke (commit unknown)"


class Run:
    def __init__(self, args: argparse.Namespace, files: dict[str, Path]) -> None:
        from tests.e2e.cluster import E2ECluster
        from tests.e2e.netns import Network

        self.args = args
        self.files = files
        self.version = kubernetes_version()
        self.results: Path = args.results
        self.cluster = E2ECluster(base=BASE, network=Network(prefix=PREFIX))
        self.registry: subprocess.Popen | None = None
        self.extra: dict[str, str] = {}
        self.t0 = time.monotonic()
        self.suite_seconds = 0.0
        self.commit = source_commit()

    # -- the cluster and the registry

    @property
    def registry_address(self) -> str:
        return f"{self.cluster.host(CLIENT).address}:{REGISTRY_PORT}"

    def start_registry(self) -> None:
        storage = BASE / "registry" / "data"
        storage.mkdir(parents=True, exist_ok=True)
        cfg = BASE / "registry" / "config.yml"
        cfg.write_text(ociregistry.registry_config(self.registry_address, storage))
        out = open(BASE / "logs" / "registry.log", "ab")
        argv = self.cluster.host(CLIENT).wrap([str(self.files["registry"]), "serve", str(cfg)])
        self.registry = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        out.close()
        from tests.e2e.netns import InNetns

        base = f"http://{self.registry_address}"
        with InNetns(self.cluster.host(CLIENT).netns):
            deadline = time.monotonic() + 60
            while not ociregistry.ping(base):
                if self.registry.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the registry did not start; see {BASE / 'logs' / 'registry.log'}")
                time.sleep(0.5)
            t = time.monotonic()
            pushed = []
            for archive in sorted(self.files["images"].glob("*.tar")):
                pushed += ociregistry.push_archive(archive, base)
        log(f"registry {base}: pushed {len(pushed)} images in {time.monotonic() - t:.1f}s")
        self.extra["images pushed to the run's registry"] = str(len(pushed))

    def stop_registry(self) -> None:
        if self.registry is not None and self.registry.poll() is None:
            self.registry.terminate()
            try:
                self.registry.wait(30)
            except subprocess.TimeoutExpired:
                self.registry.kill()
                self.registry.wait(10)

    def worker_registry_args(self, name: str) -> list[str]:
        """``--registries`` with a mirror of registry.k8s.io at the run's registry, when this mke has the flag."""
        helptext = self.cluster.run(name, "worker", "--help", check=False).stdout
        if "--registries" not in helptext:
            log("this mke has no `worker --registries`: workers use the imported images only; "
                "tests that pull with PullPolicy Always will fail")
            self.extra["registry mirror"] = "not configured (mke worker has no --registries)"
            return []
        self.cluster.outside(name, REGISTRIES_FILE).write_text(
            f"mirrors:\n  {MIRRORED}:\n    endpoints: [\"http://{self.registry_address}\"]\n")
        self.extra["registry mirror"] = f"{MIRRORED} -> http://{self.registry_address}"
        return ["--registries", str(REGISTRIES_FILE)]

    def start_cluster(self) -> None:
        c = self.cluster
        c.create(BARE, [CLIENT], mke=self.files["mke"])
        (BASE / "logs").mkdir(parents=True, exist_ok=True)
        self.start_registry()
        storage = "" if self.args.storage == "etcd" else "storage:\n  type: kine\n"
        c.start_controller(storage)
        c.wait_controller()
        log(f"controller ready after {time.monotonic() - self.t0:.0f}s")
        images = sorted(self.files["images"].glob("*.tar"))
        for name in ("w1", "w2"):  # a token per worker: a worker token binds to the first node it joins
            c.start_worker(name, c.token(), images, *self.worker_registry_args(name))
        for name in ("w1", "w2"):
            c.ready_seconds[name] = c.wait_worker_ready(name, timeout=900)
        log(f"workers Ready {c.ready_seconds}; cluster up after {time.monotonic() - self.t0:.0f}s")

    # -- the suite

    def ginkgo(self, part: str, labels: str, procs: int) -> int:
        out = self.results / part
        out.mkdir(parents=True, exist_ok=True)
        home = BASE / "home"
        home.mkdir(exist_ok=True)
        argv = [str(self.files["ginkgo"]), f"--procs={procs}", f"--label-filter={labels}",
                f"--timeout={self.args.timeout}", "--no-color", "--silence-skips", "-v"]
        if self.args.focus:
            argv.append(f"--focus={self.args.focus}")
        argv += [str(self.files["e2e.test"]), "--",
                 f"--kubeconfig={self.cluster.kubeconfig}", "--provider=skeleton", f"--report-dir={out}",
                 f"--kubectl-path={self.files['kubectl']}", "--disable-log-dump", "--non-blocking-taints=",
                 f"--e2e-output-dir={out}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "KUBECONFIG": str(self.cluster.kubeconfig)}
        log(f"{part}: {' '.join(argv[:6])} ...")
        t = time.monotonic()
        with open(self.results / "e2e.log", "ab") as f:
            f.write(f"\n===== {part}: {' '.join(argv)}\n".encode())
            f.flush()
            proc = subprocess.run(self.cluster.host(CLIENT).wrap(argv), stdout=f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, check=False)
        self.suite_seconds += time.monotonic() - t
        log(f"{part}: exit {proc.returncode} after {time.monotonic() - t:.0f}s")
        return proc.returncode

    def run_suite(self) -> None:
        """The framework labels every conformance test ``Conformance`` and every serial one ``Serial``
        (test/e2e/framework/ginkgowrapper.go), so the two parts are two label filters."""
        if self.args.parts in ("all", "parallel"):
            self.ginkgo("parallel", "Conformance && !Serial", self.args.procs)
        if self.args.parts in ("all", "serial"):
            self.ginkgo("serial", "Conformance && Serial", 1)

    # -- the report

    def write_report(self, error: str = "") -> report.Summary:
        expected = report.load_expected(conformance_yaml(self.version))
        if self.args.focus:
            import re

            rx = re.compile(self.args.focus)
            expected = [e for e in expected if rx.search(e.codename)]
        reported: dict[str, report.Outcome] = {}
        for part in ("parallel", "serial"):
            for junit in sorted((self.results / part).glob("junit_*.xml")):
                for name, o in report.read_junit(junit, part).items():
                    if name not in reported or o.state != "skipped":
                        reported[name] = o
        storage = "etcd" if self.args.storage == "etcd" else "kine (SQLite)"
        self.extra["ginkgo procs (parallel part)"] = str(self.args.procs)
        self.extra["mke"] = self.commit
        if self.args.quick:
            self.extra["focus"] = f"the quick subset ({len(QUICK)} tests, tests/conformance/quick.py)"
        elif self.args.focus:
            focus = self.args.focus if len(self.args.focus) <= 120 else f"{self.args.focus[:100]}... ({len(self.args.focus)} characters)"
            self.extra["focus"] = f"`{focus}` (a partial run)"
        if error:
            self.extra["run error"] = error
        summary = report.Summary(version=f"v{self.version}", label=f"{storage}, kube-router",
                                 outcomes=report.match(expected, reported), seconds=time.monotonic() - self.t0,
                                 suite_seconds=self.suite_seconds, extra=dict(self.extra))
        text = report.markdown(summary)
        (self.results / "summary.md").write_text(text)
        (self.results / "summary.json").write_text(summary.as_json())
        if self.args.update_docs and not self.args.focus:
            report.update_doc(DOC, text.splitlines()[0], text)
        c = summary.counts()
        log(f"{c['passed']} of {len(summary.outcomes)} passed, {c['failed']} failed, {c['skipped']} skipped, "
            f"{c['not run']} not run; summary {self.results / 'summary.md'}")
        return summary

    def collect_logs(self) -> None:
        logs = BASE / "logs"
        if logs.is_dir():
            shutil.copytree(logs, self.results / "cluster-logs", dirs_exist_ok=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", choices=["etcd", "kine"], default="etcd", help="the controller's datastore")
    p.add_argument("--procs", type=int, default=4, help="ginkgo processes for the parallel part (default 4)")
    p.add_argument("--focus", default="", help="a regular expression: run only the conformance tests it matches")
    p.add_argument("--quick", action="store_true",
                   help=f"only the quick subset (tests/conformance/quick.py: {len(QUICK)} tests), as nox -s e2e runs it")
    p.add_argument("--parts", choices=["all", "parallel", "serial"], default="all")
    p.add_argument("--timeout", default="24h", help="ginkgo's suite timeout")
    p.add_argument("--dist", type=Path, default=REPO / "dist", help="where dist/mke is")
    p.add_argument("--suite", type=Path, default=REPO / "dist" / "conformance",
                   help="the suite and its images (nox -s conformance-build)")
    p.add_argument("--results", type=Path, default=None, help="results directory (default dist/conformance/results/<run>)")
    p.add_argument("--update-docs", action="store_true", help="write the summary into docs/conformance.md (full runs only)")
    p.add_argument("--keep", action="store_true", help="leave the cluster running (stop it with the next run)")
    args = p.parse_args(argv)
    if args.procs < 1:
        p.error(f"--procs {args.procs}: give 1 or more")
    if args.quick and args.focus:
        p.error("--quick and --focus: give one")
    if args.focus:
        import re

        try:
            re.compile(args.focus)
        except re.error as e:
            p.error(f"--focus {args.focus!r}: not a regular expression: {e}")
    if args.results is None:
        args.results = REPO / "dist" / "conformance" / "results" / f"{args.storage}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        files = preflight(args)
        listed = conformance_yaml(kubernetes_version())
        if args.quick:  # the quick names as the embedded version spells them
            args.focus = quick_focus([e.codename for e in report.load_expected(listed)])
    except (UsageError, ValueError) as e:  # NotListed, or an unreadable conformance.yaml
        print(f"conformance: error: {e}", file=sys.stderr)
        return 2
    from tests.e2e.cluster import clean_slate
    from tests.e2e.netns import Network

    args.results.mkdir(parents=True, exist_ok=True)
    clean_slate(BASE, Network(prefix=PREFIX))
    BASE.mkdir(parents=True)
    run = Run(args, files)
    error = ""
    try:
        run.start_cluster()
        run.run_suite()
    except KeyboardInterrupt:
        error = "interrupted"
    except (AssertionError, RuntimeError, OSError, subprocess.SubprocessError, ociregistry.PushError) as e:
        error = " ".join(str(e).split())[:500]
        log(f"error: {error}")
    finally:
        try:
            summary = run.write_report(error)
        finally:
            run.collect_logs()
            if not args.keep:
                run.stop_registry()
                run.cluster.teardown()
                from tests.e2e.bareroot import release_nsdir

                release_nsdir(BASE / "roots")
                Network(prefix=PREFIX).destroy()
                shutil.rmtree(BASE, ignore_errors=True)
    log(f"results in {args.results}")
    c = summary.counts()
    return 0 if not error and c["passed"] == len(summary.outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
