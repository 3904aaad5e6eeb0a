"""``mke cluster backup``: ``mke backup`` on the first controller whose API is ready, the archive
fetched here over SFTP and checked (docs/cluster.md, docs/backup.md).

The archive is written on the controller under ``<dataDir>/cluster/`` (mke backup makes it 0600),
its sha256 taken there (``mke cluster probe``), streamed here into a temp file created 0600 beside
``--out`` while hashing it, compared, then read whole by ``mke.backup.verify`` (every member
against the archive's manifest), fsynced and renamed into place. The controller's copy is
removed in every case. Nothing half-written is left here: a failure removes the temp file.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path, PurePosixPath

from mke.cluster.apply import Cluster, HostState
from mke.errors import BackupError, ClusterBackupError, ClusterReadyError

CHUNK = 1 << 20


def default_out(node: str, now: float | None = None) -> Path:
    from mke.backup import archive_name

    return Path(archive_name(node, scheduled=False, when=now))


class Backup(Cluster):
    async def run(self, out: Path | None) -> int:
        t0 = time.monotonic()
        try:
            await self.connect(self.spec.controllers)
            for h in self.spec.controllers:
                await self.probe(self.states[h.index])
            leader = await self.running_leader()
            if leader is None:
                h = self.spec.controllers[0]
                raise ClusterReadyError(h.label, "backup", "no controller's API is ready: `mke cluster apply` first")
            dest = out if out is not None else default_out(leader.node_name or leader.host.address)
            await self.take(leader, dest)
        finally:
            await self.close()
        self.say(None, f"backup {dest} in {time.monotonic() - t0:.1f}s")
        return 0

    async def take(self, st: HostState, dest: Path) -> None:
        h = st.host
        remote = str(PurePosixPath(h.data_dir) / "cluster" / f"mke-cluster-backup-{os.getpid()}-{int(time.time())}.tar.zst")
        dest = dest.absolute()
        if dest.is_dir():
            raise ClusterBackupError(h.label, "backup", f"--out {dest}: is a directory; give a file name")
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            r = await self.mke_run(st, "backup", "--out", remote, "--data-dir", h.data_dir, step="mke backup",
                                   error=ClusterBackupError, timeout=1800)
            said = [x for x in r.stdout.splitlines() if x.startswith("wrote ")]
            self.say(h, said[-1] if said else f"mke backup wrote {remote}")
            want = await self.remote_sha256(st, remote, step="sha256 of the archive", error=ClusterBackupError)
            if not want:
                raise ClusterBackupError(h.label, "sha256 of the archive", f"{remote}: not readable there")
            t = time.monotonic()
            got, size = await self.fetch(st, remote, tmp)
            if got != want:
                raise ClusterBackupError(h.label, "fetch", f"{remote}: sha256 {got} here after the transfer, "
                                                           f"{want} there")
            self.say(h, f"fetched {size / 2**20:.1f} MiB in {time.monotonic() - t:.1f}s, sha256 {got[:12]} "
                        "matches the controller's")
            import asyncio

            from mke.backup import verify

            try:
                m = await asyncio.to_thread(verify, tmp)
            except BackupError as e:
                raise ClusterBackupError(h.label, "check the archive", str(e)) from e
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
            dfd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            store = f"{m.database} revision {m.revision}" if m.datastore else f"no datastore ({m.database})"
            self.say(h, f"wrote {dest} (0600): {len(m.files)} files match the manifest; {store}; cluster "
                        f"{m.cluster[:19]}…")
        finally:
            tmp.unlink(missing_ok=True)
            await st.remote.remove(remote, step="remove the controller's copy", error=ClusterBackupError)

    async def fetch(self, st: HostState, remote: str, tmp: Path) -> tuple[str, int]:
        """``remote`` streamed into ``tmp`` (created 0600, never there before); (sha256, size)."""
        import asyncssh

        sftp = await st.remote.sftp()
        digest = hashlib.sha256()
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            async with sftp.open(remote, "rb") as f:
                while chunk := await f.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
        except (asyncssh.Error, OSError) as e:
            raise ClusterBackupError(st.host.label, "fetch", f"{remote} to {tmp}: {e}") from e
        finally:
            os.close(fd)
        return digest.hexdigest(), size
