"""tests/conformance/report.py: JUnit reports matched against upstream's conformance list."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conformance import report
from tests.conformance.ociregistry import PushError, split_ref

LIST = textwrap.dedent("""\
    - testname: Pods, basic
      codename: '[sig-node] Pods should be submitted and removed [NodeConformance]
        [Conformance]'
      file: test/e2e/common/node/pods.go
    - testname: DNS, cluster
      codename: '[sig-network] DNS should provide DNS for the cluster [Conformance]'
      file: test/e2e/network/dns.go
    - testname: Taint, serial
      codename: '[sig-node] NoExecuteTaintManager evicts pods [Serial] [Conformance]'
      file: test/e2e/node/taints.go
    - testname: Image volume
      codename: '[sig-node] ImageVolume should succeed [Conformance]'
      file: test/e2e/common/node/image_volume.go
    - testname: Never run
      codename: '[sig-apps] Deployment never ran [Conformance]'
      file: test/e2e/apps/deployment.go
    """)

# As ginkgo v2 writes them for e2e.test: leaf node type omitted, labels appended in brackets,
# specs the focus left out marked skipped with the bare message "skipped".
PARALLEL = textwrap.dedent("""\
    <?xml version="1.0" encoding="UTF-8"?>
    <testsuites tests="5" disabled="0" errors="0" failures="1" time="100">
      <testsuite name="Kubernetes e2e suite" package="/" tests="5" skipped="0" failures="1" errors="0" time="100">
        <testcase name="[It] [sig-node] Pods should be submitted and removed [NodeConformance] [Conformance] [NodeConformance, Conformance]" classname="Kubernetes e2e suite" status="passed" time="12.5"></testcase>
        <testcase name="[sig-network] DNS should provide DNS for the cluster [Conformance] [Conformance]" classname="Kubernetes e2e suite" status="failed" time="300">
          <failure message="timed out waiting for the condition&#xA;  on pod dns-test" type="failed">trace</failure>
        </testcase>
        <testcase name="[sig-node] NoExecuteTaintManager evicts pods [Serial] [Conformance] [Serial, Conformance]" classname="Kubernetes e2e suite" status="skipped" time="0">
          <skipped message="skipped"></skipped>
        </testcase>
        <testcase name="[sig-storage] Something else entirely" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
        <testcase name="[sig-node] ImageVolume should succeed [Conformance] [sig-node, Conformance]" status="failed" time="2">
          <failure message="" type="failed">[FAILED] Expected&#xA;    &lt;string&gt;: Debian&#xA;to contain substring&#xA;    &lt;string&gt;: Alpine Linux&#xA;In [It] at: image_volume.go:87 @ 11/28/26</failure>
        </testcase>
        <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="3"></testcase>
      </testsuite>
    </testsuites>
    """)
SERIAL = textwrap.dedent("""\
    <testsuites><testsuite name="Kubernetes e2e suite" tests="2">
      <testcase name="[sig-node] NoExecuteTaintManager evicts pods [Serial] [Conformance] [Serial, Conformance]" status="skipped" time="0.2">
        <skipped message="skipped - the cluster has only 1 schedulable node"></skipped>
      </testcase>
      <testcase name="[sig-node] Pods should be submitted and removed [NodeConformance] [Conformance]" status="skipped" time="0">
        <skipped message="skipped"></skipped>
      </testcase>
    </testsuite></testsuites>
    """)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "conformance.yaml").write_text(LIST)
    (tmp_path / "parallel.xml").write_text(PARALLEL)
    (tmp_path / "serial.xml").write_text(SERIAL)
    return {"list": tmp_path / "conformance.yaml", "parallel": tmp_path / "parallel.xml", "serial": tmp_path / "serial.xml"}


def outcomes(files: dict[str, Path]) -> dict[str, report.Outcome]:
    expected = report.load_expected(files["list"])
    reported = {**report.read_junit(files["serial"], "serial")}
    for name, o in report.read_junit(files["parallel"], "parallel").items():
        if name not in reported or o.state != "skipped":
            reported[name] = o
    return {o.codename: o for o in report.match(expected, reported)}


def test_each_listed_test_gets_its_state(files):
    got = outcomes(files)
    assert len(got) == 5
    pods = got["[sig-node] Pods should be submitted and removed [NodeConformance] [Conformance]"]
    assert (pods.state, pods.seconds, pods.part, pods.sig) == ("passed", 12.5, "parallel", "sig-node")
    dns = got["[sig-network] DNS should provide DNS for the cluster [Conformance]"]
    assert dns.state == "failed" and dns.message == "timed out waiting for the condition on pod dns-test"
    taint = got["[sig-node] NoExecuteTaintManager evicts pods [Serial] [Conformance]"]
    assert taint.state == "skipped" and "1 schedulable node" in taint.message and taint.part == "serial"
    # listed, but no report ran it: counted as "not run", never dropped
    assert got["[sig-apps] Deployment never ran [Conformance]"].state == "not run"
    # ginkgo's empty message attribute: the failure's text up to its location
    iv = got["[sig-node] ImageVolume should succeed [Conformance]"]
    assert iv.state == "failed" and iv.message == "[FAILED] Expected <string>: Debian to contain substring <string>: Alpine Linux"


def test_a_test_only_filtered_out_is_not_run_not_skipped(files, tmp_path):
    (tmp_path / "serial.xml").write_text("<testsuites></testsuites>")
    got = outcomes(files)
    assert got["[sig-node] NoExecuteTaintManager evicts pods [Serial] [Conformance]"].state == "not run"


def test_summary_counts_sigs_and_lists_what_did_not_pass(files):
    got = list(outcomes(files).values())
    s = report.Summary(version="v1.36.5", label="etcd, kube-router", outcomes=got, seconds=4000, suite_seconds=3700)
    text = report.markdown(s)
    assert text.startswith("### v1.36.5, etcd, kube-router\n")
    assert "**1 of 5 passed**, 2 failed, 1 skipped, 1 not run" in text
    assert "| sig-node | 3 | 1 | 1 | 1 | 0 |" in text
    assert "- **failed** [sig-network] DNS should provide DNS for the cluster [Conformance]: timed out" in text
    assert json.loads(s.as_json())["counts"] == {"passed": 1, "failed": 2, "skipped": 1, "not run": 1}


def test_update_doc_replaces_only_its_own_run(tmp_path):
    doc = tmp_path / "conformance.md"
    doc.write_text("# Conformance\n\n## Build\n\nbuilt.\n")
    report.update_doc(doc, "### v1.36.5, etcd, kube-router", "### v1.36.5, etcd, kube-router\n\nfirst\n")
    report.update_doc(doc, "### v1.36.5, kine (SQLite), kube-router", "### v1.36.5, kine (SQLite), kube-router\n\nkine\n")
    report.update_doc(doc, "### v1.36.5, etcd, kube-router", "### v1.36.5, etcd, kube-router\n\nsecond\n")
    text = doc.read_text()
    assert text.startswith("# Conformance\n\n## Build\n\nbuilt.\n")
    assert "second" in text and "first" not in text and "kine\n" in text
    assert text.count(report.DOC_BEGIN) == 1 and text.count("### v1.36.5, etcd") == 1


@pytest.mark.parametrize("bad", ["[]x", "- {testname: a}\n", "a: [b"])
def test_a_bad_list_is_one_error_naming_the_file(tmp_path, bad):
    p = tmp_path / "conformance.yaml"
    p.write_text(bad)
    with pytest.raises(ValueError, match=str(p)):
        report.load_expected(p)


def test_a_bad_junit_names_the_file(tmp_path):
    p = tmp_path / "junit_01.xml"
    p.write_text("<testsuites>")
    with pytest.raises(ValueError, match="junit_01.xml"):
        report.read_junit(p, "parallel")


@pytest.mark.parametrize("ref,want", [
    ("registry.k8s.io/e2e-test-images/agnhost:2.66.1", ("registry.k8s.io", "e2e-test-images/agnhost", "2.66.1")),
    ("registry.k8s.io/pause:3.10.2", ("registry.k8s.io", "pause", "3.10.2")),
    ("localhost:5000/x/y:z", ("localhost:5000", "x/y", "z")),
    ("busybox:1.36", ("docker.io", "library/busybox", "1.36")),
])
def test_split_ref(ref, want):
    assert split_ref(ref) == want


def test_split_ref_needs_a_tag():
    with pytest.raises(PushError):
        split_ref("registry.k8s.io/pause")


def test_the_quick_focus_selects_exactly_the_quick_tests():
    import re

    from tests.conformance.quick import QUICK, focus

    rx = re.compile(focus())
    assert all(rx.search(name) for name in QUICK)
    others = ["[sig-node] Pods should be submitted and removed gracefully [Conformance]",
              "[sig-network] DNS should provide DNS for the cluster with a twist [Conformance]",
              "[sig-apps] Deployment should run [Conformance]"]
    assert [o for o in others if rx.search(o)] == []


def test_the_quick_tests_are_conformance_tests_of_the_embedded_version():
    """Every quick name is in upstream's list (needs the kubernetes module the suite builds from)."""
    from tests.conformance.quick import QUICK
    from tests.conformance.run import UsageError, conformance_yaml, kubernetes_version

    try:
        path = conformance_yaml(kubernetes_version())
    except UsageError:
        pytest.skip("k8s.io/kubernetes is not in the build cache (nox -s conformance-build downloads it)")
    listed = [e.codename for e in report.load_expected(path)]
    assert [q for q in QUICK if q not in listed] == []  # spelled as the embedded version spells them


def test_a_quick_name_resolves_whatever_the_order_of_its_labels():
    """1.37 moved [Conformance] before [NodeConformance]: the quick list works with either."""
    import re

    from tests.conformance.quick import QUICK, NotListed, focus, resolve

    def reordered(name: str) -> str:  # the same labels, in reverse order
        labels = re.findall(r"\[[^\]]*\]", name)
        text = " ".join(re.sub(r"\[[^\]]*\]", " ", name).split())
        return " ".join([labels[0], text, *reversed(labels[1:])])

    older = [reordered(q) for q in QUICK] + ["[sig-apps] Deployment should run [Conformance]"]
    assert resolve(older) == [reordered(q) for q in QUICK]
    rx = re.compile(focus(older))
    assert all(rx.search(reordered(q)) for q in QUICK)
    assert not rx.search("[sig-apps] Deployment should run [Conformance]")
    with pytest.raises(NotListed, match=r"tests/conformance/quick.py: .* is not in the embedded version's conformance list"):
        resolve(older[1:])
