"""mke/errors.py: one table of the runtime's errors, each exit code once."""

from __future__ import annotations

import errno
from pathlib import Path

from mke import errors
from mke.errors import HostError, MkeError
from tests.support.errortable import error_classes_outside, table_problems

REPO = Path(__file__).resolve().parents[3]


def test_every_code_once_and_every_class_listed():
    assert table_problems(errors, MkeError) == []


def test_no_error_class_outside_errors_py():
    known = {c.__name__ for c in vars(errors).values() if isinstance(c, type) and issubclass(c, MkeError)}
    assert error_classes_outside([REPO / "mke"], REPO / "mke" / "errors.py", known) == []


def test_host_error_names_the_path():
    e = HostError.from_os_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/etc/passwd/pki"))
    assert str(e) == "/etc/passwd/pki: Not a directory" and e.exit_code == 13
    assert str(HostError.from_os_error(FileExistsError(errno.EEXIST, "File exists", "/etc/passwd"))) == \
        "/etc/passwd: exists and is not a directory"
    assert str(HostError.from_os_error(PermissionError(errno.EACCES, "Permission denied"))) == "Permission denied"


def test_the_troubleshooting_docs_list_every_exit_code_as_the_runtime_has_it():
    import re
    from pathlib import Path

    from mke import errors

    doc = (Path(__file__).resolve().parents[3] / "docs" / "troubleshooting.md").read_text()
    table = doc.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {name: int(code) for code, name in re.findall(r"^\| (\d+) \| (\w+) \|", table, re.MULTILINE)}
    have = {c.__name__: c.exit_code for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, errors.MkeError)}
    assert listed == have
