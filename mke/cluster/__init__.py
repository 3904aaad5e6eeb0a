"""``mke cluster``: a whole cluster's lifecycle from one machine, over SSH (docs/cluster.md).

spec.py     the cluster file (YAML): hosts, SSH settings, the cluster's mke.yaml, the file to ship
ssh.py      one host's SSH connection (asyncssh): known_hosts checked, commands, atomic uploads
probe.py    what ``mke cluster probe`` reports from a host (runs there, by the shipped mke)
apply.py    apply: connect, probe, upload, sysinfo, install, first controller, joins, Ready
ops.py      status, kubeconfig, reset
upgrade.py  upgrade: the plan (order, batches, skips), the rolling run that stops at the first failure
api.py      the cluster's Kubernetes API from here, through a controller's SSH connection (port forward)
drain.py    cordon, drain (evictions: PodDisruptionBudgets hold), uncordon
backup.py   backup: mke backup on a controller, the archive fetched over SFTP and checked
"""


def _fips_hashlib() -> None:
    """asyncssh does ``from hashlib import md5`` at import (for MD5 key fingerprints, which mke never
    asks for). A FIPS runtime's hashlib has no md5 (its OpenSSL FIPS provider has none, and the
    built-in hash modules are left out), so the import failed and every ``mke cluster`` command of
    dist/mke-fips died with a traceback (found by ``nox -s e2e-fips``). In a FIPS runtime only, a
    stand-in that refuses to hash is put in its place; every other algorithm asyncssh uses goes
    through ``cryptography`` on the FIPS provider, which offers only what it approves (so no
    curve25519, ChaCha20-Poly1305 or Ed25519 is negotiated)."""
    import hashlib

    from mke.fips.runtime_env import is_fips_runtime

    if hasattr(hashlib, "md5") or not is_fips_runtime():
        return

    def md5(*args: object, **kwargs: object) -> object:
        raise ValueError("MD5 is not available in mke's FIPS runtime (FIPS 140-3 does not approve it)")

    hashlib.md5 = md5  # type: ignore[attr-defined]


_fips_hashlib()
