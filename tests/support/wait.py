"""Polling for a condition of a running cluster, for the e2e and integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 180.0, interval: float = 2.0) -> Any:
    """``fn()``'s first truthy value; AssertionError naming ``what`` and the last value or error after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the API comes and goes while things (re)start
            last = f"{type(e).__name__}: {e}"
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout:.0f}s (last: {str(last)[:500]})")
