"""The environment for processes mke starts: what the caller had, minus PyInstaller's traces.

A one-file PyInstaller program runs from a temp dir that its bootloader prepends to
LD_LIBRARY_PATH (saving the caller's value in LD_LIBRARY_PATH_ORIG) and marks with
``_PYI_*`` variables. Children (kubelet, containerd, runc, ...) must not inherit
those: a static binary does not care, but anything dynamic they start would load
libraries from mke's temp dir. ``clean_env`` restores what the caller had.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# Set by the bootloader for its own child process; meaningless to anyone else.
_PYINSTALLER_PREFIXES = ("_PYI_", "_MEI")
_PYINSTALLER_NAMES = frozenset({"PYINSTALLER_RESET_ENVIRONMENT", "LD_LIBRARY_PATH_ORIG", "LIBPATH_ORIG"})
# Socket activation of mke itself (systemd): addressed to mke's pid, not to its children.
_SOCKET_ACTIVATION = frozenset({"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"})


def _bundle_dir() -> str | None:
    return getattr(sys, "_MEIPASS", None)


def clean_env(base: Mapping[str, str] | None = None, *, extra: Mapping[str, str] | None = None,
              bundle_dir: str | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) fit for a child process, plus ``extra``.

    LD_LIBRARY_PATH gets back the caller's value (from LD_LIBRARY_PATH_ORIG) or is
    removed; any entry inside the bundle dir is dropped in any case.
    """
    env = dict(os.environ if base is None else base)
    bundle = bundle_dir if bundle_dir is not None else _bundle_dir()
    frozen = bundle is not None
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env["LD_LIBRARY_PATH_ORIG"]
    elif frozen:
        env.pop("LD_LIBRARY_PATH", None)
    for name in list(env):
        if name in _PYINSTALLER_NAMES or name in _SOCKET_ACTIVATION or name.startswith(_PYINSTALLER_PREFIXES):
            del env[name]
    if bundle and "LD_LIBRARY_PATH" in env:
        root = os.path.realpath(bundle)
        kept = [p for p in env["LD_LIBRARY_PATH"].split(":")
                if p and not (os.path.realpath(p) == root or os.path.realpath(p).startswith(root + os.sep))]
        if kept:
            env["LD_LIBRARY_PATH"] = ":".join(kept)
        else:
            del env["LD_LIBRARY_PATH"]
    if "MKE_FIPS_RUNTIME" in env:  # a FIPS mke (fips/pyi_rth_mke_fips.py): caller's OPENSSL_*, GODEBUG fips140=on
        from mke.fips.runtime_env import child_env

        env = child_env(env, fips_payload=True)
    if extra:
        env.update(extra)
    return env
