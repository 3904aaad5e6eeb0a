"""``mke backup [--out FILE]``: one archive of this controller's cluster (docs/backup.md);
``mke backup list``: the archives in the backup directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mke.commands import add_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["create", "list"], default="create",
                   help="create (the default): write an archive; list: the archives in the backup directory")
    p.add_argument("--out", "-o", type=Path, default=None,
                   help="create: the archive to write (default: <backup.directory>/mke-backup-<node>-<time>.tar.zst)")
    p.add_argument("--dir", type=Path, default=None,
                   help="list: the directory (default: backup.directory of mke.yaml, else <data-dir>/backups)")
    p.add_argument("--json", action="store_true", help="list: as JSON")
    p.add_argument("--config", "-c", type=Path,
                   help="mke.yaml, when no server runs here (a running server's own configuration wins)")
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    from mke.backup import archive_name, create_backup, default_directory, list_archives
    from mke.cli import warn
    from mke.config import node_config
    from mke.node.datadir import data_dir_from, read_status
    from mke.node.hostinfo import node_name

    data_dir = data_dir_from(args.data_dir)
    cfg = node_config(data_dir, args.config, warn=warn)
    if args.action == "list":
        directory = args.dir or default_directory(data_dir, cfg)
        found = list_archives(directory)
        if args.json:
            print(json.dumps([{"path": str(a.path), "size": a.size, "problem": a.problem,
                               **({"created": a.manifest.created, "storage": a.manifest.database,
                                   "datastore_included": bool(a.manifest.datastore), "revision": a.manifest.revision,
                                   "scheduled": a.manifest.scheduled, "node": a.manifest.node_name,
                                   "cluster": a.manifest.cluster} if a.manifest else {})} for a in found], indent=1))
            return 0
        if not found:
            print(f"no backups in {directory}")
            return 0
        import datetime as dt

        rows = [("NAME", "TIME (UTC)", "SIZE", "STORAGE", "KIND")]
        for a in found:
            m = a.manifest
            if m is None:
                rows.append((a.path.name, "-", _size(a.size), "-", f"unreadable: {a.problem}"))
                continue
            when = dt.datetime.fromtimestamp(m.created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            storage = m.database if m.datastore else f"{m.database} (not included)"
            rows.append((a.path.name, when, _size(a.size), storage, "scheduled" if m.scheduled else "manual"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
        return 0
    if args.dir is not None or args.json:
        from mke.errors import UsageError

        raise UsageError("mke backup: --dir and --json are for `mke backup list`; create takes --out FILE")
    st = read_status(data_dir) or {}
    name = st.get("node_name") or node_name()
    out = args.out or default_directory(data_dir, cfg) / archive_name(name, scheduled=False)
    w = create_backup(data_dir, cfg, out, node_name=name, warn=warn)
    m = w.manifest
    store = f"{m.database} revision {m.revision}" if m.datastore else f"no datastore ({m.database})"
    print(f"wrote {w.path}: {_size(w.size)}, {len(m.files)} files, {store}, cluster {m.cluster[:19]}…, "
          f"in {w.seconds:.1f}s")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
