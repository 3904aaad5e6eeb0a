"""The environment for processes mke starts: what the caller had, nothing of mke's own start.

dist/mke's static entry (build/entry) runs the Python runtime with a few variables of its
own (``PYTHONHOME``, ``MKE_EXE_FD``, ...) and keeps the caller's ``PYTHON*``, ``LD_PRELOAD``
and ``LD_AUDIT`` aside as ``MKE_ENTRY_SAVED_<NAME>``; mke/start.py undoes that at start.
The runtime's loader and library path are command-line arguments of its dynamic loader,
never ``LD_LIBRARY_PATH``, so nothing of them reaches a child. ``clean_env`` still drops
any entry variable from the environment it is given (a caller may pass its own), and
socket-activation and notify variables addressed to mke itself (``LISTEN_*``,
``NOTIFY_SOCKET``, ``WATCHDOG_*``: mke/node/sdnotify.py); in a FIPS mke it also gives back the
caller's OpenSSL settings and sets GODEBUG's fips140 by the payload's Go FIPS mode: forced on
for Go's own module, removed for BoringCrypto (mke.fips.runtime_env.child_env).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mke.node.sdnotify import ENV_NAMES as SDNOTIFY_ENV

# Socket activation and the notify socket of mke itself (systemd): addressed to mke's pid, not to
# its children (containerd would tell systemd READY=1 before the node is).
_FOR_MKE_ONLY = frozenset({"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", *SDNOTIFY_ENV})


def clean_env(base: Mapping[str, str] | None = None, *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) fit for a child process, plus ``extra``."""
    from mke.start import EXE_ENV, EXE_FD_ENV, SAVED_PREFIX

    env = dict(os.environ if base is None else base)
    for name in list(env):
        if name in _FOR_MKE_ONLY or name in (EXE_ENV, EXE_FD_ENV):
            del env[name]
        elif name.startswith(SAVED_PREFIX):
            env[name[len(SAVED_PREFIX):]] = env.pop(name)
    if "MKE_FIPS_RUNTIME" in env:  # a FIPS mke (mke/start.py): caller's OPENSSL_*, GODEBUG by --fips-go
        from mke.fips.runtime_env import child_env, payload_go_fips

        env = child_env(env, go_fips=payload_go_fips())
    if extra:
        env.update(extra)
    return env
