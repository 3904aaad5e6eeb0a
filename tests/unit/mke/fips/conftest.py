"""Real Go programs for the mke/fips tests, built once per session (tests/support/gofips.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gofips import build_programs, have_go_fips


@pytest.fixture(scope="session")
def gobins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not have_go_fips():
        pytest.skip("needs Go 1.24+ on the host")
    return build_programs(tmp_path_factory.mktemp("fipsgo"))
