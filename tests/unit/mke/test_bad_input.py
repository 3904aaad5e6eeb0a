"""Every error a user can cause ends in one line (issue 19.1): a table of bad inputs for every command.

Each case is an ``mke`` command line (and the files it needs, made in ``tmp_path``), the error
class it must end with (mke/errors.py: by class, never by number) and a fragment the line must
hold (the flag, file or field at fault). Every case is run twice:

- as root, with the real command line (``python -m mke``, as dist/mke runs the same ``main()``):
  the exit code, stderr exactly one ``mke: error:`` line, no traceback;
- as another user, in-process (``mke.cli.main`` with ``os.geteuid`` patched: the venv is not
  readable by ``nobody``): the commands that need root refuse up front with the sudo hint,
  the others end exactly as for root.

And nothing was written: ``tmp_path`` (which holds every data dir, bin dir and unit dir a case
names) is the same before and after, so a ``--data-dir`` that did not exist still does not.
No case starts anything: each fails on its input before a component, a lock or a file is made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mke import cli, errors
from mke.errors import (
    BackupError,
    BusyError,
    ConfigError,
    HostError,
    KubeAPIError,
    MkeError,
    NotImplementedYet,
    PayloadError,
    PKIError,
    ServiceError,
    StagingError,
    TokenError,
    UsageError,
)
from tests.support.badinput import assert_one_line, snapshot, sub, write_files
from tests.support.jointokens import tokens

REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 45  # seconds per case: each fails on its input, in well under that on an idle machine


@dataclass(frozen=True)
class Tok:
    """A join token made when the case runs: ``kind`` is a key of ``tokens()``."""

    kind: str


Arg = str | Tok


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[Arg, ...]
    error: type[MkeError]
    fragment: str  # the line holds it ({tmp} is the case's tmp_path)
    files: dict[str, str | bytes | Tok | None] = field(default_factory=dict)  # None: a directory
    env: dict[str, str] = field(default_factory=dict)

    @property
    def command(self) -> str:
        return next((a for a in self.argv if isinstance(a, str) and not a.startswith("-")), "")


def C(id: str, argv: str | list[Arg], error: type[MkeError], fragment: str, **kw) -> Case:
    return Case(id, tuple(argv.split() if isinstance(argv, str) else argv), error, fragment, **kw)


D = "--data-dir {tmp}/data"  # a data dir that does not exist (and must not, afterwards)
NOSYS = "--ignore-sysinfo"  # the host checks pass or fail by host; the cases test their input
BAD_YAML = "api:\n  port: [6443\n"
CONFIGS = {  # file -> (content, fragment): each one error, named by file and field
    "bad-yaml.yaml": (BAD_YAML, "bad-yaml.yaml: not valid YAML"),
    "port.yaml": ("api:\n  port: 70000\n", "api.port"),
    "port-str.yaml": ("api:\n  port: https\n", "api.port"),
    "cidr.yaml": ("network:\n  podCIDR: 10.244.0.0/33\n", "network.podCIDR"),
    "provider.yaml": ("network:\n  provider: flannel\n", "network.provider"),
    "typo.yaml": ("netwrok:\n  provider: calico\n", "netwrok"),
    "storage.yaml": ("storage:\n  type: mysql\n", "storage.type"),
    "list.yaml": ("- api\n- network\n", "list.yaml"),
    "kubeconfig.yaml": ("apiVersion: v1\nkind: Config\nclusters: []\n", "kubeconfig.yaml"),
    "binary.yaml": (b"\xff\xfe\x00junk\x00\x9c", "binary.yaml"),
    "dup.yaml": ("api:\n  port: 6443\napi:\n  port: 6444\n", "dup.yaml"),
    "section.yaml": ("api: 6443\n", "api"),
    "bool.yaml": ("konnectivity:\n  enabled: maybe\n", "konnectivity.enabled"),
    "image.yaml": ("images:\n  pause: 'not an image!'\n", "images.pause"),
}


def cfg(name: str) -> dict[str, str | bytes]:
    return {name: CONFIGS[name][0]}


def config_cases(prefix: str, argv: str, names: list[str]) -> list[Case]:
    """``argv`` with ``{cfg}`` replaced by each bad config of ``names``."""
    return [C(f"{prefix}-{n.removesuffix('.yaml')}", argv.replace("{cfg}", f"{{tmp}}/{n}"), ConfigError,
              CONFIGS[n][1], files=cfg(n)) for n in names]


def Svc(id: str, argv: str | list[Arg], error: type[MkeError], fragment: str, **kw) -> Case:
    """A case of mke install, start, stop or uninstall: on a stand-in for / (``$MKE_INIT_ROOT``, made
    only when the case's files make it) with no tool on PATH, so that no case ever reaches the
    host's own service manager."""
    return C(id, argv, error, fragment, **{**kw, "env": {**SERVICE_ENV, **kw.get("env", {})}})


SERVICE_ENV = {"MKE_INIT_ROOT": "{tmp}/root", "PATH": "{tmp}/no-tools"}
SYSTEMD = {"root/run/systemd/system": None}
OPENRC = {"root/run/openrc": None}
UNITS = "root/etc/systemd/system"
CONTROLLER_UNIT = {f"{UNITS}/mke-controller.service": "# Written by mke install controller; x\n[Service]\n"}
MKE_WORKER_UNIT = "# Written by mke install worker; x\n[Service]\n"
ADMIN = {"data/pki/admin.conf": "junk: [", "data/pki/admin.crt": "not a certificate\n"}
KINE = {"kine.yaml": "storage:\n  type: kine\n"}
EMPTY, BLANK, BINARY = "", "  \n\t\n", b"\xff\xfe\x00\x01"

CASES: list[Case] = [
    # -- the command line itself
    C("no-command", "", UsageError, "COMMAND"),
    C("unknown-command", "frobnicate", UsageError, "invalid choice: 'frobnicate'"),
    C("unknown-global-flag", "--bogus version", UsageError, "--bogus"),
    # -- version
    C("version-extra-arg", "version extra", UsageError, "unrecognized arguments: extra"),
    C("version-bad-flag", "version --bogus", UsageError, "--bogus"),
    C("version-json-value", "version --json=yes", UsageError, "--json"),
    C("version-payload-missing", "version", PayloadError, "$MKE_PAYLOAD={tmp}/nope",
      env={"MKE_PAYLOAD": "{tmp}/nope"}),
    C("version-payload-junk", "version", PayloadError, "{tmp}/junk",
      files={"junk": b"this is no mke payload\n" * 10}, env={"MKE_PAYLOAD": "{tmp}/junk"}),
    C("version-payload-empty", "version", PayloadError, "{tmp}/empty",
      files={"empty": EMPTY}, env={"MKE_PAYLOAD": "{tmp}/empty"}),
    C("version-payload-dir", "version", PayloadError, "{tmp}/dir",
      files={"dir": None}, env={"MKE_PAYLOAD": "{tmp}/dir"}),
    # -- extract
    C("extract-bad-role", "extract --bin-dir {tmp}/bin --role master", UsageError, "--role"),
    C("extract-jobs-not-int", "extract --bin-dir {tmp}/bin --jobs many", UsageError, "--jobs"),
    C("extract-jobs-zero", "extract --bin-dir {tmp}/bin --jobs 0", UsageError, "--jobs"),
    C("extract-jobs-negative", "extract --bin-dir {tmp}/bin --jobs=-2", UsageError, "--jobs"),
    C("extract-payload-junk", "extract --bin-dir {tmp}/bin", PayloadError, "{tmp}/junk",
      files={"junk": b"\x00" * 300}, env={"MKE_PAYLOAD": "{tmp}/junk"}),
    C("extract-payload-missing", "extract --bin-dir {tmp}/bin kubelet", PayloadError, "$MKE_PAYLOAD",
      env={"MKE_PAYLOAD": "{tmp}/nope"}),
    # -- config
    C("config-no-action", "config", UsageError, "ACTION"),
    C("config-bad-action", "config check", UsageError, "invalid choice: 'check'"),
    C("config-create-extra", "config create mke.yaml", UsageError, "unrecognized arguments: mke.yaml"),
    C("config-reference-flag", "config reference --json", UsageError, "--json"),
    C("config-validate-no-file", "config validate", UsageError, "config validate"),
    C("config-validate-missing", "config validate {tmp}/nope.yaml", ConfigError, "{tmp}/nope.yaml"),
    C("config-validate-missing-flag", "config validate --config {tmp}/nope.yaml", ConfigError, "{tmp}/nope.yaml"),
    C("config-validate-dir", "config validate {tmp}/dir", ConfigError, "{tmp}/dir", files={"dir": None}),
    C("config-validate-under-file", "config validate /etc/passwd/mke.yaml", ConfigError, "/etc/passwd/mke.yaml"),
    C("config-validate-etc-passwd", "config validate /etc/passwd", ConfigError, "/etc/passwd"),
    *config_cases("config-validate", "config validate {cfg}", list(CONFIGS)),
    # -- token
    C("token-no-action", "token", UsageError, "ACTION"),
    C("token-bad-action", "token delete", UsageError, "invalid choice: 'delete'"),
    C("token-create-no-role", f"token create {D}", UsageError, "--role"),
    C("token-create-bad-role", f"token create --role admin {D}", UsageError, "--role"),
    C("token-create-bad-expiry", f"token create --role worker --expiry 5x {D}", UsageError, "--expiry '5x'"),
    C("token-create-controller-forever", f"token create --role controller --expiry 0 {D}", UsageError,
      "controller tokens must expire"),
    C("token-create-reusable-worker", f"token create --role worker --reusable {D}", UsageError,
      "--reusable: only for --role=controller"),
    C("token-create-short-expiry", f"token create --role worker --expiry 30s {D}", UsageError, "--expiry '30s'"),
    C("token-create-empty-expiry", ["token", "create", "--role", "worker", "--expiry", "", *D.split()],
      UsageError, "--expiry"),
    C("token-create-no-admin", f"token create --role worker {D}", PKIError, "{tmp}/data/pki/admin.conf"),
    C("token-create-system-dir", "token create --role worker --data-dir /", UsageError, "--data-dir /"),
    C("token-create-data-dir-file", "token create --role worker --data-dir /etc/passwd", PKIError,
      "/etc/passwd/pki/admin.conf"),
    C("token-create-bad-config", f"token create --role worker {D} -c {{tmp}}/bad-yaml.yaml", ConfigError,
      "bad-yaml.yaml", files={**ADMIN, **cfg("bad-yaml.yaml")}),
    C("token-create-missing-config", f"token create --role worker {D} -c {{tmp}}/nope.yaml", ConfigError,
      "{tmp}/nope.yaml", files=ADMIN),
    C("token-create-junk-kubeconfig", f"token create --role worker {D}", KubeAPIError, "{tmp}/data/pki/admin.conf",
      files=ADMIN),
    C("token-list-no-admin", f"token list {D}", PKIError, "{tmp}/data/pki/admin.conf"),
    C("token-list-system-dir", "token list --data-dir /var/lib", UsageError, "--data-dir /var/lib"),
    C("token-list-extra", f"token list {D} abcdef", UsageError, "unrecognized arguments: abcdef"),
    C("token-invalidate-nothing", f"token invalidate {D}", UsageError, "token"),
    C("token-invalidate-junk", f"token invalidate not-a-token! {D}", TokenError, "'not-a-token!'"),
    C("token-invalidate-bad-id", f"token invalidate abc.defghijklmnopqrs {D}", TokenError, "abc.defghijklmnopqrs"),
    C("token-invalidate-altered", ["token", "invalidate", Tok("altered"), *D.split()], TokenError, "join token"),
    C("token-invalidate-no-admin", f"token invalidate abcdef {D}", PKIError, "{tmp}/data/pki/admin.conf"),
    # -- status
    C("status-not-running", f"status {D}", BusyError, "{tmp}/data"),
    C("status-system-dir", "status --data-dir /", UsageError, "--data-dir /"),
    C("status-data-dir-file", "status --data-dir {tmp}/file", BusyError, "{tmp}/file", files={"file": "x\n"}),
    C("status-bad-flag", f"status {D} --watch", UsageError, "--watch"),
    # -- kubeconfig
    C("kubeconfig-no-user", f"kubeconfig {D}", UsageError, "user"),
    C("kubeconfig-bad-user", f"kubeconfig root {D}", UsageError, "invalid choice: 'root'"),
    C("kubeconfig-no-pki", f"kubeconfig admin {D}", PKIError, "{tmp}/data/pki/admin.crt"),
    C("kubeconfig-system-dir", "kubeconfig admin --data-dir /usr", UsageError, "--data-dir /usr"),
    C("kubeconfig-bad-config", f"kubeconfig admin {D} -c {{tmp}}/port.yaml", ConfigError, "api.port",
      files={**ADMIN, **cfg("port.yaml")}),
    C("kubeconfig-junk-pki", f"kubeconfig admin {D} --server https://10.0.0.1:6443", HostError, "{tmp}/data/pki/ca.crt",
      files=ADMIN),
    # -- kubectl
    C("kubectl-no-admin", f"kubectl {D} -- get nodes", UsageError, "no admin kubeconfig at {tmp}/data/pki/admin.conf"),
    C("kubectl-system-dir", "kubectl --data-dir / -- get nodes", UsageError, "--data-dir /"),
    C("kubectl-no-binary", f"kubectl {D} --bin-dir {{tmp}}/bin -- --kubeconfig {{tmp}}/kc get pods", StagingError,
      "kubectl", env={"PATH": "{tmp}/empty-path"}),
    # -- ctr, crictl (the worker's containerd socket, or the user's)
    C("ctr-no-socket", f"ctr {D} images ls", UsageError, "no containerd socket at {tmp}/data/run/containerd/containerd.sock"),
    C("ctr-socket-is-a-file", f"ctr {D} images ls", UsageError, "no containerd socket at {tmp}/data/run/containerd",
      files={"data/run/containerd/containerd.sock": "not a socket\n"}),
    C("ctr-system-dir", "ctr --data-dir /etc images ls", UsageError, "--data-dir /etc"),
    C("ctr-flag-before-command", f"ctr {D} -n default images ls", UsageError, "unrecognized arguments: -n"),
    C("ctr-no-binary", f"ctr {D} --bin-dir {{tmp}}/bin -- --address {{tmp}}/c.sock images ls", StagingError, "ctr",
      env={"PATH": "{tmp}/empty-path"}),
    C("crictl-no-socket", f"crictl {D} ps", UsageError, "no containerd socket at {tmp}/data/run/containerd/containerd.sock"),
    C("crictl-system-dir", "crictl --data-dir / ps", UsageError, "--data-dir /"),
    C("crictl-bad-flag", f"crictl {D} --runtime-endpoint unix:///x ps", UsageError, "--runtime-endpoint"),
    C("crictl-no-binary", f"crictl {D} --bin-dir {{tmp}}/bin ps", StagingError, "crictl",
      env={"PATH": "{tmp}/empty-path", "CONTAINER_RUNTIME_ENDPOINT": "unix:///x"}),
    # -- completion
    C("completion-no-shell", "completion", UsageError, "shell"),
    C("completion-unknown-shell", "completion tcsh", UsageError, "invalid choice: 'tcsh'"),
    C("completion-extra", "completion bash zsh", UsageError, "unrecognized arguments: zsh"),
    # -- reset
    C("reset-root", "reset --data-dir /", UsageError, "--data-dir /"),
    C("reset-etc", "reset --data-dir /etc", UsageError, "--data-dir /etc"),
    C("reset-var-lib", "reset --data-dir /var/lib/", UsageError, "--data-dir /var/lib"),
    C("reset-usr", "reset --data-dir /usr", UsageError, "--data-dir /usr"),
    C("reset-check-system-dir", "reset --check --data-dir /etc", UsageError, "--data-dir /etc"),
    C("reset-not-mke", "reset --data-dir {tmp}/precious", UsageError, "--data-dir {tmp}/precious",
      files={"precious/thesis.tex": "years of work\n"}),
    C("reset-data-dir-file", "reset --data-dir {tmp}/file", HostError, "{tmp}/file: Not a directory",
      files={"file": "x\n"}),
    C("reset-bad-flag", f"reset {D} --force", UsageError, "--force"),
    # -- install: every case on a stand-in for / ($MKE_INIT_ROOT) with no tool on PATH, never the host's
    Svc("install-no-role", "install", UsageError, "role"),
    Svc("install-bad-role", "install master", UsageError, "invalid choice: 'master'"),
    Svc("install-unknown-flag", "install worker --bogus", UsageError, "--bogus"),
    Svc("install-force-value", "install worker --force=yes", UsageError, "--force"),
    Svc("install-worker-no-token", f"install worker {D}", UsageError, "join token"),
    Svc("install-token-twice", ["install", "worker", Tok("worker"), "--token-file", "{tmp}/t", *D.split()], UsageError,
      "--token-file", files={"t": Tok("worker")}),
    Svc("install-controller-registries", "install controller --registries {tmp}/r.yaml", UsageError, "--registries",
      files={"r.yaml": "mirrors: {}\n"}),
    Svc("install-worker-bad-registries", ["install", "worker", Tok("worker"), "--registries", "{tmp}/r.yaml", *D.split()],
      ConfigError, "{tmp}/r.yaml", files={"r.yaml": BAD_YAML}),
    Svc("install-worker-token-file-missing", "install worker --token-file {tmp}/nope", UsageError,
      "--token-file {tmp}/nope"),
    Svc("install-worker-token-file-empty", "install worker --token-file {tmp}/t", UsageError, "--token-file {tmp}/t",
      files={"t": EMPTY}),
    Svc("install-worker-junk-token", f"install worker junk {D}", TokenError, "join token"),
    Svc("install-worker-token-env-junk", f"install worker {D}", TokenError, "join token", env={"MKE_TOKEN": "junk"}),
    Svc("install-worker-controller-token", ["install", "worker", Tok("controller"), *D.split()], TokenError,
      "controller token"),
    Svc("install-controller-worker-token", "install controller --token-file {tmp}/t", TokenError, "worker token",
      files={"t": Tok("worker")}),
    Svc("install-worker-bad-taint", "install worker --token-file {tmp}/t --taint nope", UsageError, "--taint 'nope'",
      files={"t": Tok("worker")}),
    Svc("install-worker-bad-label", "install worker --token-file {tmp}/t --label nolabel", UsageError,
      "--label 'nolabel'", files={"t": Tok("worker")}),
    Svc("install-worker-bad-node-ip", "install worker --token-file {tmp}/t --node-ip 999.1.1.1", UsageError,
      "--node-ip '999.1.1.1'", files={"t": Tok("worker")}),
    Svc("install-worker-bad-kubelet-arg", "install worker --token-file {tmp}/t --kubelet-arg =2", UsageError,
      "--kubelet-arg '=2'", files={"t": Tok("worker")}),
    Svc("install-worker-pod-logs-system-dir", "install worker --token-file {tmp}/t --pod-logs-dir /var/log", UsageError,
      "--pod-logs-dir /var/log", files={"t": Tok("worker")}),
    Svc("install-controller-bad-name", "install controller --name Bad_Name!", UsageError, "--name"),
    Svc("install-system-data-dir", ["install", "worker", Tok("worker"), "--data-dir", "/"], UsageError, "--data-dir /"),
    *[Svc(c.id, c.argv, c.error, c.fragment, files=c.files) for c in config_cases(
        "install-controller", "install controller -c {cfg}", ["bad-yaml.yaml", "cidr.yaml", "kubeconfig.yaml"])],
    Svc("install-controller-missing-config", "install controller -c {tmp}/nope.yaml", ConfigError, "{tmp}/nope.yaml"),
    Svc("install-no-init-system", "install controller", ServiceError, "neither systemd", files={"root": None}),
    Svc("install-init-root-relative", "install controller", UsageError, "$MKE_INIT_ROOT=relative/root",
      env={"MKE_INIT_ROOT": "relative/root"}),
    Svc("install-init-root-file", "install controller", UsageError, "$MKE_INIT_ROOT={tmp}/root",
      files={"root": "not a directory\n"}),
    Svc("install-no-systemctl", "install worker --token-file {tmp}/t", ServiceError, "systemctl is not on PATH",
      files={"t": Tok("worker"), **SYSTEMD}),
    Svc("install-no-rc-service", "install controller", ServiceError, "rc-service is not on PATH", files=OPENRC),
    Svc("install-unit-exists", "install worker --token-file {tmp}/t", UsageError, "--force",
      files={"t": Tok("worker"), **SYSTEMD, f"{UNITS}/mke-worker.service": "[Unit]\n"}),
    Svc("install-other-role-installed", "install worker --token-file {tmp}/t", UsageError,
      "mke-controller is already installed", files={"t": Tok("worker"), **SYSTEMD, **CONTROLLER_UNIT}),
    Svc("install-script-exists", "install controller", UsageError, "--force",
      files={**OPENRC, "root/etc/init.d/mke-controller": "#!/sbin/openrc-run\n"}),
    Svc("install-openrc-two-spaces", ["install", "worker", "--token-file", "{tmp}/t", "--cgroup-root", "a  b"],
      UsageError, "two spaces in a row", files={"t": Tok("worker"), **OPENRC}),
    # -- start, stop, uninstall (the same stand-in for /)
    *[case for verb in ("start", "stop", "uninstall") for case in (
        Svc(f"{verb}-bad-role", f"{verb} master", UsageError, "invalid choice: 'master'"),
        Svc(f"{verb}-extra-arg", f"{verb} worker now", UsageError, "unrecognized arguments: now"),
        Svc(f"{verb}-bad-flag", f"{verb} --all", UsageError, "--all"),
        Svc(f"{verb}-no-init-system", verb, ServiceError, "neither systemd", files={"root": None}),
        Svc(f"{verb}-init-root-relative", verb, UsageError, "$MKE_INIT_ROOT=relative/root",
          env={"MKE_INIT_ROOT": "relative/root"}),
        Svc(f"{verb}-nothing-installed", verb, ServiceError, "no mke service is installed", files=SYSTEMD),
        Svc(f"{verb}-role-not-installed", f"{verb} worker", ServiceError, "mke-worker is not installed",
          files={**SYSTEMD, **CONTROLLER_UNIT}),
        Svc(f"{verb}-both-installed", verb, UsageError, "name one",
          files={**SYSTEMD, **CONTROLLER_UNIT, f"{UNITS}/mke-worker.service": MKE_WORKER_UNIT}),
        Svc(f"{verb}-no-systemctl", verb, ServiceError, "systemctl is not on PATH", files={**SYSTEMD, **CONTROLLER_UNIT}),
        Svc(f"{verb}-openrc-no-rc-service", verb, ServiceError, "rc-service is not on PATH",
          files={**OPENRC, "root/etc/init.d/mke-worker": "#!/sbin/openrc-run\n# Written by mke install worker; x\n"}),
    )],
    Svc("uninstall-not-mke-unit", "uninstall", ServiceError, "was not written by mke install",
      files={**SYSTEMD, f"{UNITS}/mke-controller.service": "[Service]\nExecStart=/usr/local/bin/mke server\n"}),
    # -- etcd
    C("etcd-no-action", "etcd", UsageError, "ACTION"),
    C("etcd-bad-action", "etcd members", UsageError, "invalid choice: 'members'"),
    C("etcd-system-dir", "etcd member-list --data-dir /", UsageError, "--data-dir /"),
    C("etcd-bad-config", f"etcd member-list {D} -c {{tmp}}/storage.yaml", ConfigError, "storage.type",
      files=cfg("storage.yaml")),
    C("etcd-kine", f"etcd member-list {D} -c {{tmp}}/kine.yaml", UsageError, "storage.type", files=KINE),
    C("etcd-leave-kine", f"etcd leave {D} -c {{tmp}}/kine.yaml", UsageError, "storage.type", files=KINE),
    C("etcd-no-pki", f"etcd member-list {D}", KubeAPIError, "{tmp}/data/pki/etcd/ca.crt"),
    # -- fips
    C("fips-no-action", "fips", UsageError, "ACTION"),
    C("fips-bad-action", "fips verify", UsageError, "invalid choice: 'verify'"),
    C("fips-both-only", "fips check --binaries-only --runtime-only", UsageError, "--binaries-only"),
    C("fips-bad-flag", "fips check --strict", UsageError, "--strict"),
    C("fips-payload-junk", "fips check --binaries-only --bin-dir {tmp}/bin", PayloadError, "{tmp}/junk",
      files={"junk": b"\x7fELF" + b"\x00" * 200}, env={"MKE_PAYLOAD": "{tmp}/junk"}),
    # -- airgap
    C("airgap-no-action", "airgap", UsageError, "SUBCOMMAND"),
    C("airgap-bad-action", "airgap pull", UsageError, "invalid choice: 'pull'"),
    C("airgap-missing-config", "airgap list-images -c {tmp}/nope.yaml", ConfigError, "{tmp}/nope.yaml"),
    C("airgap-config-dir", "airgap list-images -c {tmp}/dir", ConfigError, "{tmp}/dir", files={"dir": None}),
    *config_cases("airgap", "airgap list-images -c {cfg}", ["bad-yaml.yaml", "provider.yaml", "image.yaml"]),
    # -- certificate
    C("certificate-no-action", f"certificate {D}", UsageError, "ACTION"),
    C("certificate-bad-action", f"certificate renew {D}", UsageError, "invalid choice: 'renew'"),
    C("certificate-rotate-bad-service", f"certificate rotate --service kubelet {D}", UsageError, "--service"),
    C("certificate-rotate-no-pki", f"certificate rotate {D}", UsageError, "{tmp}/data/pki/ca.key"),
    C("certificate-rotate-worker", "certificate rotate --data-dir {tmp}/w", UsageError, "kubelet rotates its own",
      files={"w/worker": None}),
    C("certificate-status-nothing", f"certificate status {D}", UsageError, "no certificates here"),
    C("certificate-system-dir", "certificate status --data-dir /", UsageError, "--data-dir /"),
    # -- sysinfo
    C("sysinfo-bad-role", f"sysinfo --role master {D}", UsageError, "--role"),
    C("sysinfo-system-dir", "sysinfo --data-dir /", UsageError, "--data-dir /"),
    C("sysinfo-bad-flag", f"sysinfo {D} --fix", UsageError, "--fix"),
    *config_cases("sysinfo", f"sysinfo {D} -c {{cfg}}", ["bad-yaml.yaml", "port.yaml", "typo.yaml"]),
    C("sysinfo-missing-config", f"sysinfo {D} -c {{tmp}}/nope.yaml", ConfigError, "{tmp}/nope.yaml"),
    # -- server (every case fails on its input: nothing starts)
    C("server-system-dir", "server --data-dir /var/lib", UsageError, "--data-dir /var/lib"),
    C("server-data-dir-etc", f"server --data-dir /etc {NOSYS}", UsageError, "--data-dir /etc"),
    C("server-data-dir-file", f"server --data-dir /etc/passwd {NOSYS}", HostError, "/etc/passwd"),
    C("server-data-dir-tmp-file", f"server --data-dir {{tmp}}/file {NOSYS}", HostError, "{tmp}/file",
      files={"file": "x\n"}),
    C("server-bad-flag", f"server {D} --workers 3", UsageError, "--workers"),
    C("server-missing-config", f"server {D} -c {{tmp}}/nope.yaml", ConfigError, "{tmp}/nope.yaml"),
    C("server-config-dir", f"server {D} -c {{tmp}}/dir", ConfigError, "{tmp}/dir", files={"dir": None}),
    *config_cases("server", f"server {D} -c {{cfg}}",
                  ["bad-yaml.yaml", "port.yaml", "cidr.yaml", "provider.yaml", "typo.yaml", "kubeconfig.yaml",
                   "binary.yaml"]),
    C("server-token-file-missing", f"server {D} --token-file {{tmp}}/nope", UsageError, "--token-file {tmp}/nope"),
    C("server-token-file-empty", f"server {D} --token-file {{tmp}}/t", UsageError, "--token-file {tmp}/t",
      files={"t": EMPTY}),
    C("server-token-file-blank", f"server {D} --token-file {{tmp}}/t", UsageError, "--token-file {tmp}/t",
      files={"t": BLANK}),
    C("server-token-file-binary", f"server {D} --token-file {{tmp}}/t", UsageError, "--token-file {tmp}/t",
      files={"t": BINARY}),
    C("server-token-file-dir", f"server {D} --token-file {{tmp}}/t", UsageError, "--token-file {tmp}/t",
      files={"t": None}),
    C("server-token-twice", ["server", Tok("controller"), "--token-file", "{tmp}/t", *D.split()], UsageError,
      "--token-file", files={"t": Tok("controller")}),
    C("server-token-empty", ["server", "", *D.split()], UsageError, "token argument"),
    C("server-token-junk", f"server junk {D} {NOSYS}", TokenError, "join token"),
    C("server-token-junk-file", f"server {D} --token-file {{tmp}}/t {NOSYS}", TokenError, "join token",
      files={"t": "mke1.!!!!\n"}),
    C("server-token-truncated", ["server", Tok("truncated"), *D.split(), NOSYS], TokenError, "join token"),
    C("server-token-too-long", ["server", Tok("too-long"), *D.split(), NOSYS], TokenError, "characters long"),
    C("server-token-expired", ["server", Tok("expired-controller"), *D.split(), NOSYS], TokenError, "expired"),
    C("server-token-worker", ["server", Tok("worker"), *D.split(), NOSYS], TokenError, "worker token"),
    C("server-token-altered", ["server", Tok("altered"), *D.split(), NOSYS], TokenError, "join token"),
    C("server-token-unreachable", ["server", Tok("controller"), *D.split(), NOSYS], TokenError, "127.0.0.1:9"),
    C("server-bad-name", f"server {D} --name Bad_Name! {NOSYS}", UsageError, "--name"),
    C("server-bad-log-level", f"server {D} --log-level bogus", UsageError, "--log-level"),
    C("server-log-level-case", f"server {D} --log-level INFO", UsageError, "invalid choice: 'INFO'"),
    C("server-log-size-unit", f"server {D} --log-max-size 10X", UsageError, "--log-max-size"),
    C("server-log-size-tiny", f"server {D} --log-max-size 100", UsageError, "4KiB or more"),
    C("server-log-files-zero", f"server {D} --log-max-files 0", UsageError, "--log-max-files"),
    # -- worker (every case fails on its input: nothing starts)
    C("worker-system-dir", "worker --data-dir /usr mke1.x", UsageError, "--data-dir /usr"),
    C("worker-pod-logs-system-dir", f"worker --pod-logs-dir /var/log mke1.x {D}", UsageError, "--pod-logs-dir /var/log"),
    C("worker-pod-logs-root", f"worker --pod-logs-dir / mke1.x {D}", UsageError, "--pod-logs-dir /"),
    C("worker-bad-flag", f"worker {D} --role controller", UsageError, "--role"),
    C("worker-no-token", f"worker {D} {NOSYS}", TokenError, "join token"),
    C("worker-token-empty", ["worker", "", *D.split()], UsageError, "token argument"),
    C("worker-token-junk", f"worker junk {D} {NOSYS}", TokenError, "join token"),
    C("worker-token-prefix-only", f"worker mke1. {D} {NOSYS}", TokenError, "join token"),
    C("worker-token-junk-b64", f"worker mke1.!!!notbase64 {D} {NOSYS}", TokenError, "join token"),
    C("worker-token-truncated", ["worker", Tok("truncated"), *D.split(), NOSYS], TokenError, "join token"),
    C("worker-token-too-long", ["worker", Tok("too-long"), *D.split(), NOSYS], TokenError, "characters long"),
    C("worker-token-expired", ["worker", Tok("expired-worker"), *D.split(), NOSYS], TokenError, "expired"),
    C("worker-token-controller", ["worker", Tok("controller"), *D.split(), NOSYS], TokenError, "controller token"),
    C("worker-token-altered", ["worker", Tok("altered"), *D.split(), NOSYS], TokenError, "join token"),
    C("worker-token-env-junk", f"worker {D} {NOSYS}", TokenError, "join token", env={"MKE_TOKEN": "junk"}),
    C("worker-token-unreachable", ["worker", Tok("worker"), *D.split(), NOSYS], TokenError, "127.0.0.1:9"),
    C("worker-token-file-missing", f"worker {D} --token-file {{tmp}}/nope", UsageError, "--token-file {tmp}/nope"),
    C("worker-token-file-empty", f"worker {D} --token-file {{tmp}}/t", UsageError, "--token-file {tmp}/t",
      files={"t": EMPTY}),
    C("worker-token-file-binary", f"worker {D} --token-file {{tmp}}/t", UsageError, "--token-file {tmp}/t",
      files={"t": BINARY}),
    C("worker-token-file-dir", f"worker {D} --token-file {{tmp}}/t", UsageError, "--token-file {tmp}/t",
      files={"t": None}),
    C("worker-token-file-expired", f"worker {D} --token-file {{tmp}}/t {NOSYS}", TokenError, "expired",
      files={"t": Tok("expired-worker")}),
    C("worker-token-twice", ["worker", Tok("worker"), "--token-file", "{tmp}/t", *D.split()], UsageError,
      "--token-file", files={"t": Tok("worker")}),
    C("worker-bad-taint", f"worker mke1.x {D} --taint nope", UsageError, "--taint 'nope'"),
    C("worker-bad-taint-effect", f"worker mke1.x {D} --taint a=b:Never", UsageError, "--taint 'a=b:Never'"),
    C("worker-bad-label", f"worker mke1.x {D} --label nolabel", UsageError, "--label 'nolabel'"),
    C("worker-bad-label-key", f"worker mke1.x {D} --label a/b/c=1", UsageError, "--label 'a/b/c=1'"),
    C("worker-bad-name", f"worker mke1.x {D} --name Bad_Name!", UsageError, "--name"),
    C("worker-bad-log-level", f"worker mke1.x {D} --log-level bogus", UsageError, "--log-level"),
    C("worker-log-files-many", f"worker mke1.x {D} --log-max-files 5000", UsageError, "--log-max-files"),
    C("worker-log-size-empty", ["worker", "mke1.x", *D.split(), "--log-max-size", ""], UsageError, "--log-max-size"),
    C("worker-bad-node-ip", f"worker mke1.x {D} --node-ip 999.1.1.1", UsageError, "--node-ip '999.1.1.1'"),
    C("worker-loopback-node-ip", f"worker mke1.x {D} --node-ip 127.0.0.1", UsageError, "--node-ip 127.0.0.1"),
    C("worker-foreign-node-ip", f"worker mke1.x {D} --node-ip 192.0.2.77", UsageError, "--node-ip 192.0.2.77"),
    C("worker-bad-kubelet-arg", f"worker mke1.x {D} --kubelet-arg =2", UsageError, "--kubelet-arg '=2'"),
    C("worker-registries-missing", f"worker mke1.x {D} --registries {{tmp}}/nope.yaml", ConfigError, "{tmp}/nope.yaml"),
    C("worker-registries-bad-yaml", f"worker mke1.x {D} --registries {{tmp}}/r.yaml", ConfigError, "{tmp}/r.yaml",
      files={"r.yaml": BAD_YAML}),
    C("worker-registries-mke-yaml", f"worker mke1.x {D} --registries {{tmp}}/r.yaml", ConfigError, "registries",
      files={"r.yaml": "registries:\n  mirrors: {}\n"}),
    C("worker-registries-bad-mirror", f"worker mke1.x {D} --registries {{tmp}}/r.yaml", ConfigError, "mirrors",
      files={"r.yaml": "mirrors:\n  docker.io:\n    endpoint: [ftp://x]\n"}),
    C("worker-data-dir-file", f"worker --data-dir {{tmp}}/file {NOSYS}", TokenError, "join token", files={"file": "x\n"}),
    C("cluster-missing-file", "cluster apply -c {tmp}/nope.yaml", ConfigError, "{tmp}/nope.yaml"),
    C("cluster-bad-yaml", "cluster apply -c {tmp}/c.yaml", ConfigError, "c.yaml: not valid YAML",
      files={"c.yaml": BAD_YAML}),
    C("cluster-bad-role", "cluster status -c {tmp}/c.yaml", ConfigError, "hosts[0].role",
      files={"c.yaml": "hosts:\n  - {address: 10.0.0.1, role: wroker}\n"}),
    C("cluster-no-controller", "cluster apply -c {tmp}/c.yaml", ConfigError, "hosts: no controller",
      files={"c.yaml": "hosts:\n  - {address: 10.0.0.1, role: worker}\n"}),
    C("cluster-managed-flag", "cluster apply -c {tmp}/c.yaml", ConfigError, "hosts[0].flags",
      files={"c.yaml": "hosts:\n  - {address: 10.0.0.1, role: controller, flags: [--data-dir=/x]}\n"}),
    C("cluster-bad-config", "cluster apply -c {tmp}/c.yaml", ConfigError, "config.api.port",
      files={"c.yaml": "hosts:\n  - {address: 10.0.0.1, role: controller}\nconfig:\n  api: {port: 0}\n"}),
    C("cluster-missing-key", "cluster apply -c {tmp}/c.yaml", ConfigError, "hosts[0].ssh.keyPath",
      files={"c.yaml": "hosts:\n  - {address: 10.0.0.1, role: controller, ssh: {keyPath: nokey}}\n"}),
    C("cluster-bad-verb", "cluster deploy", UsageError, "deploy"),
    C("cluster-upgrade-not-yet", "cluster upgrade -c {tmp}/c.yaml", NotImplementedYet, "upgrade"),
    C("cluster-reset-unconfirmed", "cluster reset -c {tmp}/c.yaml", UsageError, "--force",
      files={"c.yaml": "hosts:\n  - {address: 10.0.0.1, role: controller}\n"}),
    # -- backup, restore (archives that are real but damaged: tests/unit/mke/test_backup.py)
    C("backup-no-ca", f"backup {D}", BackupError, "{tmp}/data/pki/ca.crt"),
    C("backup-bad-action", f"backup save {D}", UsageError, "invalid choice: 'save'"),
    C("backup-json-create", f"backup --json {D}", UsageError, "--json"),
    C("backup-bad-interval", f"backup list {D} -c {{tmp}}/b.yaml", ConfigError, "backup.interval",
      files={"b.yaml": "backup:\n  interval: 6 hours\n"}),
    C("backup-bad-retention", f"backup list {D} -c {{tmp}}/b.yaml", ConfigError, "backup.retention",
      files={"b.yaml": "backup:\n  retention: 0\n"}),
    C("backup-relative-dir", f"backup list {D} -c {{tmp}}/b.yaml", ConfigError, "backup.directory",
      files={"b.yaml": "backup:\n  directory: backups\n"}),
    C("restore-no-file", f"restore {{tmp}}/nope.tar.zst {D}", UsageError, "{tmp}/nope.tar.zst: no such file"),
    C("restore-not-zstd", f"restore {{tmp}}/b.tar.zst {D}", BackupError, "{tmp}/b.tar.zst: not an mke backup",
      files={"b.tar.zst": "api:\n  port: 6443\n"}),
    C("restore-check-junk", "restore --check {tmp}/b.tar.zst", BackupError, "{tmp}/b.tar.zst: truncated or damaged",
      files={"b.tar.zst": bytes.fromhex("28b52ffd2005290000") + b"hello"}),
    C("restore-bad-name", f"restore {{tmp}}/b.tar.zst {D} --name Bad_Name!", UsageError, "--name",
      files={"b.tar.zst": b"x"}),
    C("restore-no-args", "restore", UsageError, "file"),
]


@pytest.fixture(scope="module")
def toks() -> dict[str, str]:
    return tokens()


def setup(case: Case, tmp: Path, toks: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    write_files(case.files, tmp, render=lambda tok: toks[tok.kind] + "\n")
    argv = [toks[a.kind] if isinstance(a, Tok) else sub(a, tmp) for a in case.argv]
    return argv, {k: sub(v, tmp) for k, v in case.env.items()}


def parses(argv: list[str]) -> bool:
    """Whether the command line parses (argparse's errors come before the root check)."""
    try:
        cli.make_parser(case_command(argv)).parse_args([a for a in argv if a != "--debug"])
    except UsageError:
        return False
    return True


def case_command(argv: list[str]) -> str | None:
    c = next((a for a in argv if not a.startswith("-")), None)
    return c if c in cli.COMMANDS else None


def expected(case: Case, argv: list[str], *, root: bool) -> tuple[type[MkeError], str]:
    if not root and case.command in cli.NEEDS_ROOT and "--check" not in argv and parses(argv):
        return HostError, f"run it as root (sudo mke {case.command} ...)"
    return case.error, case.fragment


def check_line(stderr: str, fragment: str, tmp: Path, prefix: str = "mke: error: ") -> None:
    assert_one_line(stderr, prefix, sub(fragment, tmp))


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKE_") and k != "KUBECONFIG"}
    return {**env, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}


def test_the_table_is_big_and_covers_every_command():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 100
    covered = {c.command for c in CASES}
    assert set(cli.COMMANDS) <= covered, set(cli.COMMANDS) - covered
    assert all(c.error.__module__ == errors.__name__ for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_as_root(case: Case, tmp_path: Path, toks: dict[str, str]):
    """The real command line, as root: one line, the class's exit code, nothing written."""
    argv, env = setup(case, tmp_path, toks)
    before = snapshot(tmp_path)
    r = subprocess.run([sys.executable, "-m", "mke", *argv], cwd=REPO, capture_output=True, text=True,
                       timeout=TIMEOUT, check=False, env={**base_env(), **env})
    error, fragment = expected(case, argv, root=True)
    check_line(r.stderr, fragment, tmp_path)
    assert r.returncode == error.exit_code, f"exit {r.returncode}, not {error.__name__}'s {error.exit_code}: {r.stderr}"
    assert snapshot(tmp_path) == before, "the command wrote under " + str(tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_as_another_user(case: Case, tmp_path: Path, toks: dict[str, str], monkeypatch, capsys):
    """In-process as uid 65534: root-only commands refuse up front with the sudo hint (after the
    command line parses); the others end as for root."""
    argv, env = setup(case, tmp_path, toks)
    for k in [k for k in os.environ if k.startswith("MKE_") or k == "KUBECONFIG"]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(os, "geteuid", lambda: 65534)

    def no_exec(*a, **kw):
        raise AssertionError(f"a bad input reached execve: {a}")

    monkeypatch.setattr(os, "execve", no_exec)
    monkeypatch.setattr(sys, "argv", ["mke", *argv])
    before = snapshot(tmp_path)
    code = cli.main(argv)
    error, fragment = expected(case, argv, root=False)
    check_line(capsys.readouterr().err, fragment, tmp_path)
    assert code == error.exit_code
    assert snapshot(tmp_path) == before


HELP = [[name] for name in cli.COMMANDS] + [["install", "controller"], ["install", "worker"],
    ["config", "validate"], ["config", "create"], ["token", "create"], ["token", "list"], ["token", "invalidate"],
    ["etcd", "member-list"], ["etcd", "leave"], ["fips", "check"], ["airgap", "list-images"],
]


@pytest.mark.parametrize("argv", HELP, ids=[" ".join(a) for a in HELP])
def test_help_exits_0(argv, capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 65534)  # --help needs no root either
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0 and "usage: mke" in capsys.readouterr().out


DEBUG = [c for c in CASES if c.id in {"config-validate-bad-yaml", "token-create-bad-expiry", "server-token-junk",
                                      "worker-bad-taint", "reset-etc", "airgap-missing-config", "unknown-command"}]


@pytest.mark.parametrize("where", ["first", "after-command", "last"])
@pytest.mark.parametrize("case", DEBUG, ids=[c.id for c in DEBUG])
def test_debug_anywhere_shows_the_traceback(case: Case, where: str, tmp_path: Path, toks, monkeypatch):
    """``--debug`` before the command, after it, or last: the error's traceback (in-process, it propagates)."""
    argv, env = setup(case, tmp_path, toks)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    at = {"first": 0, "after-command": 1, "last": len(argv)}[where]
    with pytest.raises(case.error):
        cli.main([*argv[:at], "--debug", *argv[at:]])


def test_a_config_with_several_errors_names_each_on_its_own_line(tmp_path):
    """The one exception to one line: config validate lists every error, one line each, each naming its field."""
    f = tmp_path / "mke.yaml"
    f.write_text("api:\n  port: 70000\nnetwork:\n  podCIDR: nope\n")
    r = subprocess.run([sys.executable, "-m", "mke", "config", "validate", str(f)], cwd=REPO, capture_output=True,
                       text=True, timeout=TIMEOUT, check=False, env=base_env())
    lines = r.stderr.splitlines()
    assert r.returncode == ConfigError.exit_code and len(lines) == 2, r.stderr
    assert all(line.startswith(f"mke: error: {f}: ") for line in lines)
    assert "api.port" in lines[0] and "network.podCIDR" in lines[1]

