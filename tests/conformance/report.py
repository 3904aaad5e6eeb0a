"""Read the suite's JUnit reports, match them against upstream's list of conformance tests
(``test/conformance/testdata/conformance.yaml`` of the embedded version), and write the
summary: passed / failed / skipped / not run, per SIG, with durations and every failure.

A test of the list that no report mentions is "not run": it counts against the result the
same as a failure (nothing is excluded to make the number look better).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

STATES = ("passed", "failed", "skipped", "not run")
DOC_BEGIN = "<!-- conformance-results:begin (written by `nox -s conformance -- --update-docs`) -->"
DOC_END = "<!-- conformance-results:end -->"


@dataclass(frozen=True)
class Expected:
    codename: str
    sig: str
    serial: bool
    file: str


@dataclass
class Outcome:
    codename: str
    sig: str
    state: str = "not run"
    seconds: float = 0.0
    message: str = ""
    part: str = ""  # "parallel" or "serial": which run reported it


@dataclass
class Summary:
    version: str
    label: str  # e.g. "etcd, kube-router"
    outcomes: list[Outcome]
    seconds: float = 0.0  # wall clock of the whole run (cluster + suite)
    suite_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def counts(self) -> Counter:
        return Counter(o.state for o in self.outcomes)

    def by_sig(self) -> dict[str, Counter]:
        out: dict[str, Counter] = {}
        for o in self.outcomes:
            out.setdefault(o.sig, Counter())[o.state] += 1
            out[o.sig]["seconds"] += o.seconds
        return dict(sorted(out.items()))

    def as_json(self) -> str:
        return json.dumps({"version": self.version, "label": self.label, "seconds": self.seconds,
                           "suite_seconds": self.suite_seconds, "counts": dict(self.counts()),
                           "extra": self.extra, "outcomes": [asdict(o) for o in self.outcomes]},
                          indent=1, sort_keys=True)


def sig_of(codename: str) -> str:
    m = re.match(r"\[(sig-[a-z0-9-]+)\]", codename)
    return m.group(1) if m else "other"


def load_expected(conformance_yaml: Path) -> list[Expected]:
    """Upstream's list; a bad file is an error naming it."""
    try:
        data = yaml.safe_load(conformance_yaml.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{conformance_yaml}: cannot read the conformance test list: {e}") from e
    if not isinstance(data, list) or not all(isinstance(t, dict) and "codename" in t for t in data):
        raise ValueError(f"{conformance_yaml}: not a list of tests with a codename")
    return [Expected(codename=" ".join(t["codename"].split()), sig=sig_of(t["codename"]),
                     serial="[Serial]" in t["codename"], file=str(t.get("file", ""))) for t in data]


def _normalise(name: str) -> str:
    name = " ".join(name.split())
    return name[5:] if name.startswith("[It] ") else name


def read_junit(path: Path, part: str) -> dict[str, Outcome]:
    """Every test case of one JUnit file by normalised name (ginkgo v2's report as e2e.test writes it)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise ValueError(f"{path}: not a readable JUnit report: {e}") from e
    out: dict[str, Outcome] = {}
    for case in root.iter("testcase"):
        name = _normalise(case.get("name", ""))
        status = case.get("status", "")
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None or error is not None or status in ("failed", "panicked", "timedout", "interrupted"):
            node = failure if failure is not None else error
            # ginkgo leaves the message attribute empty and puts "[FAILED] ... In [It] at: file:line" in the text
            text = (node.text or "") if node is not None else ""
            msg = (node.get("message", "") if node is not None else "") or re.split(r"\s+In \[It\] at:", text)[0] or status
            state = "failed"
        elif skipped is not None or status in ("skipped", "pending"):
            msg, state = (skipped.get("message", "") if skipped is not None else status), "skipped"
        else:
            msg, state = "", "passed"
        out[name] = Outcome(codename=name, sig=sig_of(name), state=state, seconds=float(case.get("time") or 0),
                            message=" ".join(msg.split())[:400], part=part)
    return out


def match(expected: list[Expected], reported: dict[str, Outcome]) -> list[Outcome]:
    """One outcome per expected test. A report's name is the codename, possibly followed by label
    groups; a test that ran in both parts counts by its worst state (failed > passed > skipped)."""
    rank = {"failed": 3, "passed": 2, "skipped": 1, "not run": 0}
    by_prefix: dict[str, list[Outcome]] = {}
    for name, o in reported.items():
        by_prefix.setdefault(name, []).append(o)
    out = []
    for e in expected:
        hits = [o for n, os_ in by_prefix.items() if n == e.codename or n.startswith(e.codename + " ") for o in os_]
        # a test the other part's focus left out shows up there as skipped with the bare message
        # "skipped"; a test that skipped itself says why ("skipped - <reason>")
        ran = [o for o in hits if not (o.state == "skipped" and o.message in ("", "skipped"))]
        if not ran:
            out.append(Outcome(codename=e.codename, sig=e.sig))
            continue
        best = max(ran, key=lambda o: rank[o.state])
        out.append(Outcome(codename=e.codename, sig=e.sig, state=best.state, seconds=best.seconds,
                           message=best.message, part=best.part))
    return out


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def markdown(summary: Summary) -> str:
    c = summary.counts()
    total = len(summary.outcomes)
    lines = [
        f"### {summary.version}, {summary.label}",
        "",
        f"**{c['passed']} of {total} passed**, {c['failed']} failed, {c['skipped']} skipped, "
        f"{c['not run']} not run. Suite {_fmt_seconds(summary.suite_seconds)}, whole run "
        f"(cluster, registry, suite) {_fmt_seconds(summary.seconds)}.",
        "",
    ]
    for k, v in sorted(summary.extra.items()):
        lines.append(f"- {k}: {v}")
    if summary.extra:
        lines.append("")
    lines += ["| SIG | tests | passed | failed | skipped | not run | time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for sig, n in summary.by_sig().items():
        tests = sum(n[s] for s in STATES)
        lines.append(f"| {sig} | {tests} | {n['passed']} | {n['failed']} | {n['skipped']} | {n['not run']} | "
                     f"{_fmt_seconds(n['seconds'])} |")
    bad = [o for o in summary.outcomes if o.state != "passed"]
    if bad:
        lines += ["", "Not passed:", ""]
        for o in sorted(bad, key=lambda o: (o.state, o.codename)):
            msg = f": {o.message}" if o.message else ""
            lines.append(f"- **{o.state}** {o.codename}{msg}")
    return "\n".join(lines) + "\n"


def update_doc(doc: Path, section: str, text: str) -> None:
    """Replace the run ``section`` (a ``### `` heading's text) inside the results block of ``doc``;
    other runs' sections stay as they are."""
    content = doc.read_text() if doc.exists() else "# Conformance\n"
    if DOC_BEGIN not in content:
        content = content.rstrip("\n") + f"\n\n## Results\n\n{DOC_BEGIN}\n{DOC_END}\n"
    head, rest = content.split(DOC_BEGIN, 1)
    block, tail = rest.split(DOC_END, 1)
    parts = re.split(r"(?m)^(?=### )", block.strip("\n"))
    sections = {p.splitlines()[0]: p.rstrip("\n") + "\n" for p in parts if p.startswith("### ")}
    sections[section] = text.rstrip("\n") + "\n"
    body = "\n".join(sections[k] for k in sorted(sections))
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text(f"{head}{DOC_BEGIN}\n{body}{DOC_END}{tail}")
    tmp.replace(doc)
