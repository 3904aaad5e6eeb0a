"""build/bundle/frames.py: how binaries are grouped into frames."""

from __future__ import annotations

import pytest

from build.bundle.frames import plan_frames
from build.errors import BundleError
from tests.unit.build.bundle.conftest import entry

BINS = [entry("kube-apiserver", 90, ["controller"]), entry("etcd", 30, ["controller"]),
        entry("kubelet", 60, ["worker"]), entry("runc", 10, ["worker"]),
        entry("kubectl", 50, ["controller", "worker"]), entry("coredns", 40, ["image"])]


def test_plan_groups_puts_shared_binaries_first_in_the_worker_frame():
    assert plan_frames(BINS, "groups") == [
        ("controller", ["kube-apiserver", "etcd"]),
        ("worker", ["kubectl", "kubelet", "runc"]),
        ("image", ["coredns"]),
    ]


def test_plan_other_layouts():
    assert [names for _, names in plan_frames(BINS, "per-binary")] == [
        ["coredns"], ["etcd"], ["kube-apiserver"], ["kubectl"], ["kubelet"], ["runc"]]
    assert plan_frames(BINS, "solid") == [("all", ["kube-apiserver", "kubelet", "kubectl", "coredns", "etcd", "runc"])]
    assert plan_frames([entry("x", 1, ["worker"], sha=None)], "groups") == []  # none mode
    with pytest.raises(BundleError, match="choose one of groups, per-binary, solid"):
        plan_frames(BINS, "tar")
