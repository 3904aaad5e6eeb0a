"""``mke cluster restore FILE``: the cluster of a backup archive built again on the hosts of the
cluster file (docs/cluster.md).

1. the archive is read whole and checked here (``mke.backup.verify``) before anything is touched
2. connect and probe every host: none may hold a cluster (running, or joined before): restore
   builds the cluster again, on hosts that ``mke cluster reset`` left clean (or new ones)
3. the first controller: the mke file and config as apply puts them; the archive uploaded into
   ``<dataDir>/cluster/`` (0600, its sha256 checked there); ``mke restore`` there (the PKI, the
   keys, the datastore: etcd becomes a single-member cluster; docs/backup.md); the copy removed
4. then ``apply``: the restored controller counts as joined before, so it is started as in a cold
   start; the other controllers join it with new tokens, one at a time, and the workers after
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path, PurePosixPath
from typing import Any

from mke.cluster.apply import Apply, HostState, bounded, file_digest
from mke.cluster.upgrade import newer, rfc3339
from mke.errors import BackupError, ClusterRestoreError


class Restore(Apply):
    since = ""  # RFC 3339: when the restore ended (a node's heartbeat must be newer)

    async def run_restore(self, archive: Path) -> int:
        from mke.backup import verify

        t0 = time.monotonic()
        first = self.spec.controllers[0]
        try:
            m = await asyncio.to_thread(verify, archive)
        except BackupError as e:
            raise ClusterRestoreError("(this machine)", "check the archive", str(e)) from e
        self.say(None, f"{archive}: {len(m.files)} files match the manifest; cluster {m.cluster[:19]}…, "
                       f"{m.database} revision {m.revision}, taken on {m.node_name}")
        self.digest = await asyncio.to_thread(file_digest, self.local)
        try:
            await self.connect()
            await bounded(8, list(self.states.values()), self.probe)
            for h in self.spec.hosts:
                st = self.states[h.index]
                if st.running or any((st.facts.get("joined") or {}).values()):
                    raise ClusterRestoreError(h.label, "hosts without a cluster", f"it holds a cluster already ({'running' if st.running else 'joined before'}): "
                                                                  "`mke cluster reset` first (restore builds the cluster "
                                                                  "again from the archive)")
            st = self.states[first.index]
            await self.prepare_host(st)
            await self.preflight(st)
            remote = str(PurePosixPath(first.data_dir) / "cluster" / "restore.tar.zst")
            await self.upload_archive(st, archive, remote)
            try:
                r = await self.mke_run(st, "restore", remote, "--data-dir", first.data_dir, "--name", st.node_name,
                                       step="mke restore", error=ClusterRestoreError, timeout=1800)
            finally:
                await st.remote.remove(remote, step="remove the uploaded archive", error=ClusterRestoreError)
            facts = await self.probe(st) or {}
            # the controller's clock: the nodes' heartbeats come from the same cluster
            self.since = rfc3339(float(facts.get("time") or time.time()) - 1)
            said = [x for x in r.stderr.splitlines() if "restored cluster" in x]
            self.changed(first, said[-1].removeprefix("mke restore: ") if said else "restored")
        finally:
            await self.close()
        self.states.clear()
        self.say(None, f"restored on {first.label} in {time.monotonic() - t0:.1f}s; now apply")
        return await self.run()

    async def worker(self, leader: HostState, st: HostState) -> None:
        """A worker host that joins anew (``cluster reset`` left it clean) would be refused: the
        restored datastore holds its Node as it was at the backup, and mke's CSR approver does not
        let a new worker token take over a registered node. Its Node goes first (its pods there are
        gone with the reset host; their controllers make them again)."""
        if not st.running and not (st.joined and st.installed):
            await self.mke_run(leader, "kubectl", "--data-dir", leader.host.data_dir, "--", "delete", "node",
                               st.node_name, "--ignore-not-found", step="remove the restored Node",
                               error=ClusterRestoreError, timeout=120)
            self.say(st.host, f"removed the restored Node {st.node_name}: the host joins anew")
        await super().worker(leader, st)

    def node_ready(self, node: dict[str, Any] | None) -> bool:
        """Ready, with a heartbeat after the restore: the datastore holds the nodes' Ready conditions as
        they were at the backup, which say nothing of the kubelets that join now."""
        return bool(node and node["ready"] and newer(node["heartbeat"], self.since))

    async def upload_archive(self, st, archive: Path, remote: str) -> None:
        h = st.host
        want = await asyncio.to_thread(file_digest, archive)
        await st.remote.makedirs(str(PurePosixPath(remote).parent), 0o700, step="upload the archive",
                                 error=ClusterRestoreError)
        tmp = remote + ".mke-cluster.tmp"
        await st.remote.put(archive, tmp, step="upload the archive", error=ClusterRestoreError)
        sftp = await st.remote.sftp()
        await sftp.chmod(tmp, 0o600)
        got = await self.remote_sha256(st, tmp, step="sha256 of the archive", error=ClusterRestoreError)
        if got != want:
            await st.remote.remove(tmp, step="upload the archive", error=ClusterRestoreError)
            raise ClusterRestoreError(h.label, "upload the archive", f"{tmp}: sha256 {got} there, {want} here")
        await st.remote.rename(tmp, remote, step="upload the archive", error=ClusterRestoreError)
        self.say(h, f"archive uploaded to {remote}, sha256 {want[:12]} checked there")
