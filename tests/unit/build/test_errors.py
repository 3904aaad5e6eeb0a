"""build/errors.py: one table of the toolchain's errors (build/, fips/), each exit code once."""

from __future__ import annotations

import errno
from pathlib import Path

from build import errors
from build.errors import BuildError, HostError, os_error_line
from tests.support.errortable import error_classes_outside, table_problems

REPO = Path(__file__).resolve().parents[3]


def test_every_code_once_and_every_class_listed():
    assert table_problems(errors, BuildError) == []


def test_no_error_class_outside_errors_py():
    known = {c.__name__ for c in vars(errors).values() if isinstance(c, type) and issubclass(c, BuildError)}
    assert error_classes_outside([REPO / "build", REPO / "fips"], REPO / "build" / "errors.py", known) == []


def test_os_error_line_names_the_path():
    e = NotADirectoryError(errno.ENOTDIR, "Not a directory", "/etc/passwd/linux-amd64")
    assert os_error_line(e) == "/etc/passwd/linux-amd64: Not a directory"
    assert os_error_line(FileExistsError(errno.EEXIST, "File exists", "/etc/passwd")) == \
        "/etc/passwd: exists and is not a directory"
    assert os_error_line(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")) == \
        "/a -> /b: Invalid cross-device link"
    assert os_error_line(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) == "Connection refused"
    assert HostError.from_os_error(e).exit_code == 17
