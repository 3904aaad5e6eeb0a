"""The shape DESIGN.md promises, checked on the source: no import cycles in mke/, build/
and fips/ (function-level imports included: a cycle hidden in a function is still a
cycle); mke/ never imports the toolchain; the toolchain reaches into mke/ only through
the modules docs/architecture.md lists; no module imports another's private names;
and the light commands never load ``cryptography``."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mke", "build", "fips")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((REPO / pkg).rglob("*.py")):
            out[module_name(p)] = p
    return out


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``if TYPE_CHECKING:`` (not imported at run time)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                skip.add(id(inner))
    return skip


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names imported from it) for every run-time import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_blocks(tree)
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            plain = []
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in modules:
                    out.append((sub, []))
                else:
                    plain.append(a.name)
            if plain:
                out.append((node.module, plain))
    return out


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, _names in imports_of(path, modules):
            if target in modules and target != mod:
                edges[mod].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from b import x\n")
    mods = {"a": a, "b": tmp_path / "b.py"}
    (tmp_path / "b.py").write_text("import a\nx = 1\n")
    edges = {m: {t for t, _ in imports_of(p, mods) if t in mods} for m, p in mods.items()}
    assert cycles(edges) == [["a", "b"]]


def test_the_runtime_never_imports_the_toolchain():
    modules = all_modules()
    bad = [f"{m} imports {t}" for m, p in modules.items() if m.split(".")[0] == "mke"
           for t, _ in imports_of(p, modules) if t.split(".")[0] in ("build", "fips")]
    assert not bad, bad


def crossing_modules() -> set[str]:
    """The mke modules build/ and fips/ import, as the code has it."""
    modules = all_modules()
    return {t for m, p in modules.items() if m.split(".")[0] in ("build", "fips")
            for t, _ in imports_of(p, modules) if t.split(".")[0] == "mke"}


def documented_crossing_modules() -> set[str]:
    """The modules docs/architecture.md lists under its "What crosses between the halves" heading."""
    text = (REPO / "docs" / "architecture.md").read_text()
    m = re.search(r"^## What crosses between the halves\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, 'docs/architecture.md has no "## What crosses between the halves" section'
    first_cells = re.findall(r"^\| (`mke[^|]*)\|", m.group(1), re.M)
    return {name for cell in first_cells for name in re.findall(r"`(mke(?:\.\w+)*)`", cell)}


def test_architecture_doc_lists_exactly_what_crosses_between_the_halves():
    assert documented_crossing_modules() == crossing_modules()


def test_no_module_imports_private_names_of_another():
    modules = all_modules()
    bad = []
    for m, p in modules.items():
        for target, names in imports_of(p, modules):
            if target.split(".")[0] in PACKAGES and target != m:
                bad += [f"{m}: from {target} import {n}" for n in names if n.startswith("_") and n != "__version__"]
    assert not bad, bad


LIGHT_COMMANDS = {
    "version": ["version"],
    "status": ["status", "--data-dir", "{tmp}"],
    "reset": ["reset", "--data-dir", "{tmp}/nothing-here"],
    "kubectl": ["kubectl", "--data-dir", "{tmp}", "--bin-dir", "{tmp}/bin", "get", "nodes"],
    "ctr": ["ctr", "--data-dir", "{tmp}", "--bin-dir", "{tmp}/bin", "images", "ls"],
    "crictl": ["crictl", "--data-dir", "{tmp}", "--bin-dir", "{tmp}/bin", "ps"],
    "completion": ["completion", "bash"],
}

PROBE = """
import json, os, sys
os.execve = lambda path, argv, env: (_ for _ in ()).throw(SystemExit(0))  # kubectl: stop before exec
import atexit
atexit.register(lambda: print("LOADED=" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "cryptography"))))
from mke.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
"""


@pytest.mark.parametrize("command", sorted(LIGHT_COMMANDS))
def test_light_commands_do_not_import_cryptography(command, tmp_path):
    (tmp_path / "bin").mkdir()
    kubectl = tmp_path / "bin" / "kubectl"
    kubectl.write_text("#!/bin/true\n")
    kubectl.chmod(0o755)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in LIGHT_COMMANDS[command]]
    import json

    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("LOADED=")), None)
    assert line is not None, proc.stdout + proc.stderr
    assert json.loads(line.removeprefix("LOADED=")) == [], f"mke {command} imported cryptography"
