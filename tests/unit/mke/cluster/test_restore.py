"""mke cluster restore (mke/cluster/restore.py): after the restore, a node counts as Ready only with
a heartbeat newer than the restore (the snapshot holds the Ready conditions of the backup's time).
The restore itself runs on real hosts in tests/e2e/test_cluster_tool.py."""

from __future__ import annotations

from mke.cluster.restore import Restore
from mke.cluster.spec import parse_cluster


def test_a_node_is_ready_only_with_a_heartbeat_after_the_restore(tmp_path):
    (tmp_path / "mke").write_bytes(b"x")
    spec = parse_cluster({"hosts": [{"address": "10.0.0.1", "role": "controller"}], "mke": {"file": "mke"}},
                         "cluster.yaml", tmp_path)
    r = Restore(spec, accept_new=False)
    r.since = "2026-11-28T14:10:00Z"
    assert r.node_ready({"ready": True, "heartbeat": "2026-11-28T14:10:01Z", "version": "v1.36.5"})
    assert not r.node_ready({"ready": True, "heartbeat": "2026-11-28T13:59:00Z", "version": "v1.36.5"})  # the backup's
    assert not r.node_ready({"ready": False, "heartbeat": "2026-11-28T14:10:05Z", "version": "v1.36.5"})
    assert not r.node_ready(None)
