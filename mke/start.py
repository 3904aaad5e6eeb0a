"""How dist/mke's Python starts: what the static entry (build/entry) hands over, then mke.cli.

The entry runs ``<runtime>/bin/python3.11 ... -c "from mke.start import main; main()" ARGS``
through the runtime's own dynamic loader (docs/payload.md). It passes, in the environment:

- ``MKE_EXE``: the mke file it started from (messages, ``mke install``'s systemd unit);
- ``MKE_EXE_FD``: that file, open, inherited across exec: the payload is read through
  ``/proc/self/fd/<n>``, which stays the very file that started even if it is replaced;
- ``PYTHONHOME``, ``PYTHONPATH`` and a few other ``PYTHON*`` settings for this interpreter;
- the caller's own ``PYTHON*``, ``LD_PRELOAD`` and ``LD_AUDIT`` as ``MKE_ENTRY_SAVED_<NAME>``
  (they must not act on the runtime).

``adopt()`` takes those out of ``os.environ`` and puts the caller's values back, so the
processes mke starts (kubelet, etcd, ...) get the caller's environment, not the entry's.
A FIPS runtime (it carries ``fips/openssl.cnf``) also gets OpenSSL pointed at its FIPS
provider before anything loads libcrypto (``_fips_runtime``).

Kept cheap: it runs on every start, before anything else.
"""

from __future__ import annotations

import os
import sys

EXE_ENV = "MKE_EXE"
EXE_FD_ENV = "MKE_EXE_FD"
SAVED_PREFIX = "MKE_ENTRY_SAVED_"
#: What the entry sets for this interpreter only (build/entry/main.go, runtimeEnv).
SET_BY_ENTRY = ("PYTHONHOME", "PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE", "PYTHONCOERCECLOCALE",
                "PYTHONUTF8", EXE_ENV, EXE_FD_ENV)
#: CPython's own hash modules: built into Debian's python3.11, so a FIPS runtime blocks them
#: (hashlib would otherwise fall back to them when OpenSSL's FIPS provider refuses).
BUILTIN_HASH_MODULES = ("_md5", "_sha1", "_sha256", "_sha512", "_sha2", "_sha3", "_blake2")
FIPS_SAVED_PREFIX = "MKE_FIPS_SAVED_"

#: The mke executable this process started from (None when run from source: ``python -m mke``).
executable: str | None = None
#: Where to read the running mke's payload: the entry's fd of it, else its path.
payload_path: str | None = None


def self_command(*, running_file: bool = False) -> list[str]:
    """The command that runs this mke again: the dist/mke it started from, or ``python -m mke``
    when run from source (a venv's python by its own path, not its link's target).

    ``running_file``: the very file this process started from, through the entry's open fd of it
    (``/proc/<pid>/fd/N``), for a child that must be this version even if an upgrade replaced the
    path meanwhile (mke.pkifiles' helper). Otherwise the path, resolved (a systemd unit)."""
    if not executable:
        return [os.path.abspath(sys.executable), "-m", "mke"]
    if running_file and payload_path:
        return [payload_path.replace("/proc/self/", f"/proc/{os.getpid()}/", 1)]
    return [os.path.realpath(executable)]


def adopt(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Take the entry's variables out of ``environ`` and give the caller's values back."""
    global executable, payload_path
    exe = environ.get(EXE_ENV)
    if not exe:  # not started by the entry (python -m mke): nothing to undo
        return
    fd = environ.get(EXE_FD_ENV)
    for name in SET_BY_ENTRY:
        environ.pop(name, None)
    for name in [n for n in environ if n.startswith(SAVED_PREFIX)]:
        environ[name[len(SAVED_PREFIX):]] = environ.pop(name)
    executable = exe
    payload_path = exe
    if fd and fd.isdigit():
        os.set_inheritable(int(fd), False)  # children must not inherit it
        if os.path.exists(f"/proc/self/fd/{fd}"):
            payload_path = f"/proc/self/fd/{fd}"
    sys.frozen = True  # type: ignore[attr-defined]  # as a bundled program says it is


def _fips_runtime(fips_dir: str) -> None:
    """Point OpenSSL (libcrypto.so.3, used by hashlib and by cryptography) at the runtime's FIPS
    provider and configuration, and block CPython's own hash modules. The caller's values are
    kept in MKE_FIPS_SAVED_<NAME> for the processes mke starts (mke.fips.child_env)."""
    # OPENSSL_MODULES: a provider loaded by name is looked for in the runtime, never in the
    # host's default module dir (libcrypto's compiled-in /usr/lib/<triple>/ossl-modules).
    for name, value in (("OPENSSL_CONF", os.path.join(fips_dir, "openssl.cnf")), ("OPENSSL_MODULES", fips_dir),
                        ("CRYPTOGRAPHY_OPENSSL_NO_LEGACY", "1")):
        if FIPS_SAVED_PREFIX + name not in os.environ:
            os.environ[FIPS_SAVED_PREFIX + name] = os.environ.get(name, "")
        os.environ[name] = value
    os.environ["MKE_FIPS_RUNTIME"] = fips_dir  # openssl.cnf: module = ${ENV::MKE_FIPS_RUNTIME}/fips.so
    for m in BUILTIN_HASH_MODULES:
        sys.modules[m] = None  # type: ignore[assignment]  # `import _md5` now raises ImportError
    # hashlib then logs "code for hash md5 was not found" with a traceback for each algorithm
    # OpenSSL refuses, at its first import. Those are expected: drop them.
    import logging

    class _RefusedHashes(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("code for hash ")

    logging.getLogger().addFilter(_RefusedHashes())


def main() -> None:
    adopt()
    fips_dir = os.path.join(sys.prefix, "fips")
    if executable and os.path.exists(os.path.join(fips_dir, "openssl.cnf")):
        _fips_runtime(fips_dir)
    from mke.cli import main as cli_main

    sys.argv[0] = executable or "mke"
    sys.exit(cli_main())
