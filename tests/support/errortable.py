"""The check behind tests/unit/build/test_errors.py and tests/unit/mke/test_errors.py.

Each half keeps every error class in one file (``build/errors.py``, ``mke/errors.py``)
with its own exit code. Read from the source (nothing is imported but the errors
module): every class in the half that derives, by name, from an exception is defined in
the errors module, and the errors module's table (its docstring) lists every class with
the code the class has. Two kinds may live elsewhere: module-private ``_Names`` used for
control flow inside one module (build/download.py's ``_Retryable``), which never reach
``main()``, and ``OSError`` subclasses that carry an errno from a system interface
(mke/node/netlink.py's ``NetlinkError``), which ``main()`` reports as ``HostError``.
"""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path
from types import ModuleType

EXCEPTION_NAMES = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
OSERROR_NAMES = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, OSError)}


def base_names(node: ast.ClassDef) -> list[str]:
    out = []
    for b in node.bases:
        if isinstance(b, ast.Name):
            out.append(b.id)
        elif isinstance(b, ast.Attribute):
            out.append(b.attr)
    return out


def error_classes_outside(roots: list[Path], errors_file: Path, known: set[str]) -> list[str]:
    """``file:line class`` for every public exception class defined outside ``errors_file``."""
    classes: dict[str, tuple[Path, int, list[str]]] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    classes.setdefault(f"{path}:{node.name}", (path, node.lineno, base_names(node)))
    exc, oserror = set(EXCEPTION_NAMES) | known, set(OSERROR_NAMES)
    for kind in (exc, oserror):
        changed = True
        while changed:  # an exception class is one whose base is one (by name, across the half)
            changed = False
            for key, (_p, _l, bases) in classes.items():
                name = key.rsplit(":", 1)[1]
                if name not in kind and any(b in kind for b in bases):
                    kind.add(name)
                    changed = True
    out = []
    for key, (p, line, _bases) in sorted(classes.items()):
        name = key.rsplit(":", 1)[1]
        if p != errors_file and name in exc and not name.startswith("_") and (name not in oserror or name in known):
            out.append(f"{p}:{line} {name}")
    return out


def table_problems(module: ModuleType, root: type[BaseException]) -> list[str]:
    """Every class of ``module`` under ``root`` has its own exit code, and the docstring table lists it."""
    classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, root)]
    problems = []
    codes: dict[int, str] = {}
    for c in classes:
        if "exit_code" not in vars(c):
            problems.append(f"{c.__name__} inherits its exit code; give it its own")
        elif c.exit_code in codes:
            problems.append(f"exit code {c.exit_code} is used by {codes[c.exit_code]} and {c.__name__}")
        else:
            codes[c.exit_code] = c.__name__
    listed = {name: int(code) for code, name in re.findall(r"^\s+(\d+)\s+(\w+)\s", module.__doc__ or "", re.MULTILINE)}
    for c in classes:
        if listed.get(c.__name__) != c.exit_code:
            problems.append(f"{c.__name__} (exit {c.exit_code}) is not in the table of {module.__name__} with that code")
    for name in set(listed) - {c.__name__ for c in classes}:
        problems.append(f"the table of {module.__name__} lists {name}, which is not a class there")
    return problems
