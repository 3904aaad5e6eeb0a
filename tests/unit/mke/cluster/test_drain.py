"""Which pods a drain evicts and which PodDisruptionBudget a refused eviction names
(mke/cluster/drain.py). Cordon, eviction and the timeout run against a real cluster in
tests/e2e/test_cluster_tool.py."""

from __future__ import annotations

from mke.cluster.drain import Blocked, blocking_budgets, selector_matches, skip_reason


def pod(name: str, ns: str = "default", *, labels=None, owner=None, annotations=None, phase="Running") -> dict:
    meta = {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    return {"metadata": meta, "status": {"phase": phase}}


def test_daemonset_mirror_and_ended_pods_are_left_alone():
    assert skip_reason(pod("kube-proxy-x", owner="DaemonSet")) == "DaemonSet"
    assert skip_reason(pod("static", annotations={"kubernetes.io/config.mirror": "abc"})) == "mirror pod"
    assert skip_reason(pod("job-x", owner="Job", phase="Succeeded")) == "ended"
    assert skip_reason(pod("web-x", owner="ReplicaSet")) is None
    assert skip_reason(pod("bare")) is None  # evicted too (as kubectl drain --force)
    # an owner that is not the controller does not make it a DaemonSet pod
    p = pod("odd")
    p["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "x", "controller": False}]
    assert skip_reason(p) is None


def test_label_selectors():
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "db"}}, labels)
    assert selector_matches({}, labels)  # policy/v1: an empty selector selects every pod of the namespace
    assert not selector_matches(None, labels)
    exprs = [({"key": "tier", "operator": "In", "values": ["front", "back"]}, True),
             ({"key": "tier", "operator": "NotIn", "values": ["front"]}, False),
             ({"key": "zone", "operator": "NotIn", "values": ["a"]}, True),
             ({"key": "app", "operator": "Exists"}, True),
             ({"key": "zone", "operator": "Exists"}, False),
             ({"key": "zone", "operator": "DoesNotExist"}, True),
             ({"key": "app", "operator": "DoesNotExist"}, False)]
    for e, want in exprs:
        assert selector_matches({"matchExpressions": [e]}, labels) is want, e


def test_the_blocking_budget_is_named_from_the_pods_namespace_only():
    p = pod("pinned-1", labels={"app": "pinned"})
    budgets = [{"metadata": {"name": "pinned", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"app": "pinned"}}}},
               {"metadata": {"name": "pinned", "namespace": "other"}, "spec": {"selector": {"matchLabels": {"app": "pinned"}}}},
               {"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}}]
    assert blocking_budgets(p, budgets) == ["default/pinned"]
    b = Blocked("default/pinned-1", "Cannot evict pod as it would violate the pod's disruption budget.",
                ("default/pinned",))
    assert b.line() == ("pod default/pinned-1: PodDisruptionBudget default/pinned does not allow its eviction "
                        "(Cannot evict pod as it would violate the pod's disruption budget.)")
    assert Blocked("default/x", "HTTP 500").line() == "pod default/x: HTTP 500"
