"""One host's SSH connection for ``mke cluster``, with asyncssh (docs/cluster.md, "Why asyncssh").

The host key is checked against the cluster file's known_hosts: a host that is not there is
refused unless ``accept_new`` (then its key is added to the file, as OpenSSH's
``StrictHostKeyChecking=accept-new``); a host whose key differs from the one recorded is
always refused. Commands are argument lists, quoted for the login shell with
``shlex.join``; secrets go in files written over SFTP (0600, temp + rename), never on a
command line. Every failure is a ClusterError naming the host and the step.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mke.cluster.spec import HostSpec
from mke.errors import ClusterError

CONNECT_TIMEOUT = 15.0
# A host that dies (power, network) answers nothing, not even a reset: the connection is dropped
# after KEEPALIVE_COUNT keepalive requests KEEPALIVE_INTERVAL seconds apart go unanswered (as
# OpenSSH's ServerAliveInterval/ServerAliveCountMax), so a step waiting on it fails in about a
# minute naming the host, instead of hanging until its own timeout (600 s).
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT = 4


@dataclass
class Result:
    exit_status: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """What the remote command said went wrong: its last ``mke: error:`` line, else its last line."""
        lines = [x.strip() for x in (self.stderr + "\n" + self.stdout).splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("mke: error:")]
        return (errors or lines or [f"exit {self.exit_status}, no output"])[-1]


def known_host_entry(host: HostSpec, key: Any) -> str:
    """A known_hosts line for ``host``'s ``key`` (``[addr]:port`` when the port is not 22)."""
    name = host.address if host.ssh.port == 22 else f"[{host.address}]:{host.ssh.port}"
    return f"{name} {key.export_public_key('openssh').decode().strip()}\n"


def _known(host: HostSpec) -> bool:
    """Whether the known_hosts file has an entry for this host (any key)."""
    import asyncssh

    path = host.ssh.known_hosts
    if not path.is_file():
        return False
    try:
        keys = asyncssh.read_known_hosts(str(path)).match(host.address, host.address, host.ssh.port)
    except (OSError, ValueError, asyncssh.Error) as e:
        raise ClusterError(host.label, "known_hosts", f"{path}: cannot read it: {e}") from e
    return any(keys[:2])


_append_lock = asyncio.Lock()


async def _remember(host: HostSpec, key: Any) -> None:
    """Add ``key`` to the known_hosts file (whole file rewritten atomically, one writer at a time)."""
    from mke.node.files import write_file_atomic

    path = host.ssh.known_hosts
    async with _append_lock:
        old = path.read_bytes() if path.is_file() else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_file_atomic(path, old + known_host_entry(host, key).encode(), 0o600)


class Remote:
    """An open SSH connection to one host of the cluster file."""

    def __init__(self, host: HostSpec, conn: Any) -> None:
        self.host = host
        self.conn = conn
        self._sftp: Any = None

    @classmethod
    async def connect(cls, host: HostSpec, *, accept_new: bool) -> Remote:
        import asyncssh

        known = _known(host)
        # an unknown host is still connected to (so that an unreachable one says so), trusting no key
        trusted: Any = str(host.ssh.known_hosts) if known else (None if accept_new else ([], [], []))
        options: dict[str, Any] = {"port": host.ssh.port, "username": host.ssh.user, "known_hosts": trusted,
                                   "connect_timeout": CONNECT_TIMEOUT, "keepalive_interval": KEEPALIVE_INTERVAL,
                                   "keepalive_count_max": KEEPALIVE_COUNT}
        if host.ssh.key_path is not None:
            options["client_keys"] = [str(host.ssh.key_path)]
        try:
            conn = await asyncssh.connect(host.address, **options)
        except asyncssh.HostKeyNotVerifiable as e:
            if not known:
                raise ClusterError(host.label, "ssh host key",
                                   f"{host.address} port {host.ssh.port} is not in {host.ssh.known_hosts}: add its key "
                                   "(check its fingerprint), or pass --accept-new-host-keys to add it on first "
                                   "contact") from e
            raise ClusterError(host.label, "ssh host key",
                               f"the host's key does not match the one in {host.ssh.known_hosts} ({e.reason}): "
                               "someone may be in between; if the host was reinstalled, remove its old line") from e
        except asyncssh.PermissionDenied as e:
            raise ClusterError(host.label, "ssh login",
                               f"{host.ssh.user}@{host.address} refused the key"
                               f"{' ' + str(host.ssh.key_path) if host.ssh.key_path else ''}: {e.reason}") from e
        except asyncssh.Error as e:
            raise ClusterError(host.label, "ssh", f"{host.address} port {host.ssh.port}: {e.reason}") from e
        except (TimeoutError, OSError) as e:
            what = (f"no answer in {CONNECT_TIMEOUT:.0f}s" if isinstance(e, TimeoutError)
                    else (e.strerror or str(e) or type(e).__name__))
            raise ClusterError(host.label, "ssh connect", f"{host.address} port {host.ssh.port}: {what}") from e
        if not known:
            await _remember(host, conn.get_server_host_key())
        return cls(host, conn)

    async def run(self, argv: Sequence[str], *, step: str, error: type[ClusterError], stdin: str | None = None,
                  check: bool = True, timeout: float = 600.0) -> Result:
        """``argv`` on the host; a non-zero exit (with ``check``) is ``error`` naming ``step``."""
        import asyncssh

        try:
            proc = await asyncio.wait_for(self.conn.run(shlex.join(argv), input=stdin, check=False), timeout)
        except TimeoutError as e:
            raise error(self.host.label, step, f"{shlex.join(argv[:3])}...: no end after {timeout:.0f}s") from e
        except (asyncssh.Error, OSError) as e:
            raise error(self.host.label, step, f"the SSH connection failed: {e}") from e
        result = Result(proc.exit_status if proc.exit_status is not None else -1,
                        str(proc.stdout or ""), str(proc.stderr or ""))
        if check and result.exit_status != 0:
            raise error(self.host.label, step, result.error_line())
        return result

    async def sftp(self) -> Any:
        if self._sftp is None:
            self._sftp = await self.conn.start_sftp_client()
        return self._sftp

    async def makedirs(self, path: str, mode: int, *, step: str, error: type[ClusterError]) -> None:
        import asyncssh

        sftp = await self.sftp()
        try:
            parts = PurePosixPath(path).parts
            for i in range(2, len(parts) + 1):
                d = str(PurePosixPath(*parts[:i]))
                if not await sftp.exists(d):
                    await sftp.mkdir(d, asyncssh.SFTPAttrs(permissions=mode))
        except (asyncssh.Error, OSError) as e:
            raise error(self.host.label, step, f"mkdir {path}: {e}") from e

    async def write_file(self, path: str, data: bytes, mode: int, *, step: str, error: type[ClusterError]) -> None:
        """``data`` into ``path`` atomically: a temp file (created with ``mode``) beside it, then renamed."""
        import asyncssh

        sftp = await self.sftp()
        tmp = f"{path}.mke-cluster.tmp"
        try:
            async with sftp.open(tmp, "wb", asyncssh.SFTPAttrs(permissions=mode)) as f:
                await f.write(data)
            await sftp.chmod(tmp, mode)
            await sftp.posix_rename(tmp, path)
        except (asyncssh.Error, OSError) as e:
            raise error(self.host.label, step, f"write {path}: {e}") from e

    async def put(self, local: Path, tmp: str, *, step: str, error: type[ClusterError]) -> None:
        """Copy ``local`` to ``tmp`` (0755); the caller checks its digest, then ``rename``s it."""
        import asyncssh

        sftp = await self.sftp()
        try:
            await sftp.put(str(local), tmp)
            await sftp.chmod(tmp, 0o755)
        except (asyncssh.Error, OSError) as e:
            raise error(self.host.label, step, f"upload {local} to {tmp}: {e}") from e

    async def rename(self, src: str, dst: str, *, step: str, error: type[ClusterError]) -> None:
        import asyncssh

        sftp = await self.sftp()
        try:
            await sftp.posix_rename(src, dst)
        except (asyncssh.Error, OSError) as e:
            raise error(self.host.label, step, f"rename {src} to {dst}: {e}") from e

    async def remove(self, path: str, *, step: str, error: type[ClusterError]) -> bool:
        """Remove the file ``path``; False when there was none."""
        import asyncssh

        sftp = await self.sftp()
        try:
            await sftp.remove(path)
            return True
        except asyncssh.SFTPNoSuchFile:
            return False
        except (asyncssh.Error, OSError) as e:
            raise error(self.host.label, step, f"remove {path}: {e}") from e

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self.conn.close()
        try:
            await asyncio.wait_for(self.conn.wait_closed(), 5)
        except (TimeoutError, OSError):
            pass
