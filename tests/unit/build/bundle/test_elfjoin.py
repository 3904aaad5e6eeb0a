"""build/bundle/elfjoin.py: entry + payload -> one static ELF; a dynamic one is refused."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from build.bundle.elfjoin import check_joined, join
from build.bundle.payload import write_payload_file
from build.errors import BundleError
from tests.support.artifacts import static_binary

pytestmark = pytest.mark.skipif(shutil.which("objcopy") is None or shutil.which("gcc") is None,
                                reason="needs objcopy and gcc (scripts/bootstrap.sh installs them)")


def test_join_adds_the_payload_section_to_a_static_executable(dist):
    cache, dm, parts, tmp = dist
    write_payload_file(cache, dm, tmp / "payload", runtime=parts, jobs=1)
    entry = static_binary(tmp / "entry", "entry 1.0", cache=tmp / "cbins")
    out = tmp / "joined"
    p = join(entry, tmp / "payload", out)
    assert p.manifest.names() == ("alpha", "beta", "gamma") and p.path == str(out)
    assert subprocess.run([str(out)], capture_output=True, text=True, check=True).stdout.strip() == "entry 1.0"
    headers = subprocess.run(["readelf", "-lW", str(out)], capture_output=True, text=True, check=True).stdout
    assert "INTERP" not in headers and "DYNAMIC" not in headers
    stripped = tmp / "stripped"  # strip keeps a non-allocated section it does not know
    subprocess.run(["strip", "-o", str(stripped), str(out)], check=True)
    assert check_joined(stripped).manifest == p.manifest


def test_a_dynamic_entry_is_refused(dist):
    cache, dm, parts, tmp = dist
    write_payload_file(cache, dm, tmp / "payload", runtime=parts, jobs=1)
    with pytest.raises(BundleError, match="not static"):
        join(shutil.which("true"), tmp / "payload", tmp / "joined")
    assert not (tmp / "joined").exists()
