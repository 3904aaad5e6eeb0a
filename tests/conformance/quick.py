"""The quick subset: conformance tests that `nox -s e2e` runs on every change, so that a
regression in pods, services, DNS, configuration, service accounts, exec/logs, kubectl or
image pulls shows before a full run. Each name is a codename of upstream's conformance.yaml with
its bracketed labels in any order: 1.37 reordered them ("[NodeConformance] [Conformance]" became
"[Conformance] [NodeConformance]"), so a name is resolved against the list of the embedded version
(`resolve`) and the focus is built from the names as that version spells them."""

from __future__ import annotations

import re

QUICK = (
    "[sig-node] Pods should be submitted and removed [Conformance] [NodeConformance]",
    "[sig-node] Pods should support remote command execution over websockets [Conformance] [NodeConformance]",
    "[sig-node] Pods should support retrieving logs from the container over websockets [Conformance] [NodeConformance]",
    "[sig-node] ConfigMap should be consumable via environment variable [Conformance] [NodeConformance]",
    "[sig-node] Downward API should provide pod name, namespace and IP address as env vars [Conformance] [NodeConformance]",
    "[sig-node] Variable Expansion should allow composing env vars into new env vars [Conformance] [NodeConformance]",
    '[sig-node] Probing container should be restarted with a exec "cat /tmp/health" liveness probe [Conformance] [NodeConformance]',
    "[sig-node] Container Lifecycle Hook when create a pod with lifecycle hook should execute poststart http hook properly [Conformance] [NodeConformance]",
    "[sig-node] ImageVolume should succeed with pod and pull policy of Always [LinuxOnly] [MinimumKubeletVersion:1.35] [Conformance]",
    "[sig-storage] Secrets should be consumable from pods in volume [Conformance] [NodeConformance]",
    "[sig-storage] EmptyDir volumes should support (root,0644,tmpfs) [LinuxOnly] [Conformance] [NodeConformance]",
    "[sig-network] Services should serve a basic endpoint from pods [Conformance]",
    "[sig-network] Services should serve multiport endpoints from pods [Conformance]",
    "[sig-network] Services should be able to create a functioning NodePort service [Conformance]",
    "[sig-network] DNS should provide DNS for the cluster [Conformance]",
    "[sig-network] DNS should provide DNS for services [Conformance]",
    "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [Conformance] [NodeConformance]",
    "[sig-network] Networking Granular Checks: Pods should function for node-pod communication: http [LinuxOnly] [Conformance] [NodeConformance]",
    "[sig-network] Proxy version v1 should proxy through a service and a pod [Conformance]",
    "[sig-auth] ServiceAccounts should mount an API token into pods [Conformance]",
    "[sig-auth] ServiceAccounts should create a serviceAccountToken and ensure a successful TokenReview [Conformance]",
    "[sig-auth] Certificates API [Privileged:ClusterAdmin] should support CSR API operations [Conformance]",
    "[sig-apps] Deployment RollingUpdateDeployment should delete old pods and create new ones [Conformance]",
    "[sig-apps] ReplicaSet should serve a basic image on each replica with a public image [Conformance]",
    "[sig-apps] Job should run a job to completion when tasks sometimes fail and are locally restarted [Conformance]",
    "[sig-api-machinery] Garbage collector should delete pods created by rc when not orphaning [Conformance]",
    "[sig-cli] Kubectl logs logs should be able to retrieve and filter logs [Conformance]",
    "[sig-cli] Kubectl client Kubectl api-versions should check if v1 is in available api versions [Conformance]",
    "[sig-cli] Kubectl client Kubectl describe should check if kubectl describe prints relevant information for rc and pods [Conformance]",
)


_LABEL = re.compile(r"\[[^\]]*\]")


def key(codename: str) -> tuple[str, frozenset[str]]:
    """A codename without regard to the order of its labels: (the text, the set of labels)."""
    return " ".join(_LABEL.sub(" ", codename).split()), frozenset(_LABEL.findall(codename))


class NotListed(ValueError):
    """A quick name that the embedded version's conformance list does not have."""


def resolve(codenames: list[str] | None = None) -> list[str]:
    """The QUICK tests as the given conformance list spells them (None: as QUICK spells them)."""
    if codenames is None:
        return list(QUICK)
    by_key = {key(c): c for c in codenames}
    missing = [q for q in QUICK if key(q) not in by_key]
    if missing:
        raise NotListed(f"tests/conformance/quick.py: {missing[0]!r} is not in the embedded version's conformance "
                        f"list ({len(missing)} such): rename it as that list does or remove it")
    return [by_key[key(q)] for q in QUICK]


def focus(codenames: list[str] | None = None) -> str:
    """One ginkgo --focus regular expression matching the QUICK tests: each whole codename as the
    given conformance list spells it, escaped (not anchored: ginkgo matches against a text that does
    not begin with the codename; a codename ends in its labels, so one is not a part of another)."""
    return "|".join(re.escape(name) for name in resolve(codenames))
