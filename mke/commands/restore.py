"""``mke restore FILE``: give this host the cluster of a backup archive (docs/backup.md).

The archive is checked completely before anything is written (every member against its
manifest, etcd's snapshot checksum, the CA against the cluster it names); then the PKI, the
datastore (etcd: a fresh single-member cluster from the snapshot) and ``<data-dir>/mke.yaml``
are assembled beside the data dir's contents and committed by renames. A data dir that holds
a cluster already is refused unless ``--force`` (and always when it is another cluster's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="an archive written by mke backup (.tar.zst)")
    add_data_dir(p)
    p.add_argument("--force", action="store_true",
                   help="replace the cluster state this data dir holds (of the same cluster) with the backup's")
    p.add_argument("--check", action="store_true", help="only verify the archive; write nothing")
    p.add_argument("--name", help="this controller's node name, its etcd member's (default: the host name)")
    p.add_argument("--bin-dir", type=Path, default=None,
                   help="directory holding etcdutl (default: staged into <data-dir>/bin from this mke)")


def run(args: argparse.Namespace) -> int:
    from mke.backup import restore, verify
    from mke.node.datadir import data_dir_from
    from mke.node.hostinfo import check_node_name, node_name

    if args.check:
        m = verify(args.file)
        store = f"{m.database} revision {m.revision}" if m.datastore else f"no datastore ({m.database})"
        print(f"{args.file}: OK: {len(m.files)} files match the manifest; cluster {m.cluster}; {store}; "
              f"taken on {m.node_name} by mke {m.mke_version}")
        return 0
    data_dir = data_dir_from(args.data_dir)
    name = check_node_name(args.name.lower()) if args.name else node_name()

    def say(text: str) -> None:
        print(f"mke restore: {text}", file=sys.stderr, flush=True)

    r = restore(args.file, data_dir, force=args.force, node_name=name, bin_dir=args.bin_dir, say=say)
    say(f"restored cluster {r.manifest.cluster[:19]}… into {data_dir} in {r.seconds:.1f}s")
    flags = [] if str(data_dir) == "/var/lib/mke" else [f"--data-dir {data_dir}"]
    if args.name:
        flags.append(f"--name {name}")
    print(f"start it with: mke server --config {r.config_path} {' '.join(flags)}".rstrip())
    if r.manifest.storage == "etcd":
        print("other controllers: mke reset there, then join again with a controller token "
              "(this etcd is a new single-member cluster)")
    return 0
