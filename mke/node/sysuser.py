"""A system user for a component that should not run as root (etcd: CIS 1.1.12).

mke needs nothing from the host but a kernel, so it cannot count on ``useradd``: like
systemd-sysusers, it reads and writes the account files itself. ``/etc/passwd`` and
``/etc/group`` are parsed here (not through NSS: a static runtime has no NSS modules, and
a user that LDAP or sssd knows but the files do not would not survive a network outage
anyway). A missing user is added as a system account (the highest free id in 100-999, one
number for user and group, no password, no login shell, home ``/nonexistent``) under the
lock every shadow-utils tool takes (``/etc/.pwd.lock``, lckpwdf(3)), each file replaced
atomically with its mode and owner kept, group files before user files as useradd does.
The account stays when ``mke reset`` runs, as a Debian package's system user stays after
purge: files on other disks (a restored data dir, a copied backup) may still be owned by it.

A host without ``/etc/passwd`` (a bare root filesystem) or with a read-only ``/etc`` gets
``None``: the caller runs the component as root and says why.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mke.errors import HostError
from mke.node.files import write_file_atomic

ETC = Path("/etc")
NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SYSTEM_IDS = range(999, 99, -1)  # what useradd --system picks from, highest first
GECOS = "created by mke"
LOCK_WAIT = 15.0
_THREADS = threading.Lock()  # fcntl locks exclude other processes only


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    created: bool = False  # added by this call


def _entries(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith(("#", "+", "-"))]


def lookup(name: str, etc: Path | None = None) -> Account | None:
    """The account ``name`` as /etc/passwd has it (gid: its primary group), or None."""
    passwd = Path(etc or ETC) / "passwd"
    for fields in _entries(passwd):
        if len(fields) >= 4 and fields[0] == name:
            try:
                return Account(name, int(fields[2]), int(fields[3]))
            except ValueError:
                raise HostError(f"{passwd}: the entry of {name} has a non-numeric id") from None
    return None


def name_of(number: int, file: str = "passwd", etc: Path | None = None) -> str | None:
    """The name /etc/passwd (or /etc/group, ``file="group"``) gives the id ``number``, or None."""
    for fields in _entries(Path(etc or ETC) / file):
        if len(fields) >= 3 and fields[2] == str(number):
            return fields[0]
    return None


@contextlib.contextmanager
def _pwd_lock(etc: Path) -> Iterator[None]:
    """lckpwdf(3)'s lock: an fcntl write lock on /etc/.pwd.lock, waited for up to LOCK_WAIT seconds."""
    path = Path(etc) / ".pwd.lock"
    if not _THREADS.acquire(timeout=LOCK_WAIT):
        raise HostError(f"{path}: another thread holds the account files' lock")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except BaseException:
        _THREADS.release()
        raise
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise HostError(f"{path}: another program holds the account files' lock; "
                                       "retry when it is done") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
        _THREADS.release()


def _append(path: Path, line: str) -> None:
    """Replace ``path`` by its content plus ``line``, atomically, with its mode and owner."""
    st = path.stat()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    write_file_atomic(path, data + line.encode() + b"\n", st.st_mode & 0o7777, owner=(st.st_uid, st.st_gid))


def ensure_system_user(name: str, etc: Path | None = None) -> Account | None:
    """The system account ``name``, added when missing; None when this host has no account
    files to add it to (no /etc/passwd or /etc/group) or cannot write them (read-only /etc).
    Raises HostError for account files it cannot parse or a lock it cannot get."""
    if not NAME_RE.match(name):
        raise HostError(f"{name!r}: not a valid user name (lower-case letters, digits, _ and -, 32 at most)")
    etc = Path(etc or ETC)
    found = lookup(name, etc)
    if found is not None:
        return found
    passwd, group = etc / "passwd", etc / "group"
    if not passwd.is_file() or not group.is_file() or not os.access(etc, os.W_OK):
        return None
    try:
        with _pwd_lock(etc):
            found = lookup(name, etc)  # added by another mke meanwhile
            if found is not None:
                return found
            uids = {f[2] for f in _entries(passwd) if len(f) >= 3}
            groups = {f[0]: f[2] for f in _entries(group) if len(f) >= 3}
            if name in groups:  # a group of that name exists: the user joins it
                gid = int(groups[name])
                uid = next((i for i in SYSTEM_IDS if str(i) not in uids), None)
            else:
                gids = set(groups.values())
                uid = next((i for i in SYSTEM_IDS if str(i) not in uids and str(i) not in gids), None)
                gid = uid  # type: ignore[assignment]
            if uid is None:
                raise HostError(f"{passwd}: no free system id in 100-999 for the user {name}; "
                                   f"add it yourself (useradd --system {name})")
            if name not in groups:
                _append(group, f"{name}:x:{gid}:")
                if (etc / "gshadow").is_file():
                    _append(etc / "gshadow", f"{name}:!::")
            shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false")
            _append(passwd, f"{name}:x:{uid}:{gid}:{name}, {GECOS}:/nonexistent:{shell}")
            if (etc / "shadow").is_file():
                _append(etc / "shadow", f"{name}:!*:{int(time.time() // 86400)}::::::")
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES):  # an immutable /etc
            return None
        raise HostError(f"{e.filename or etc}: cannot add the system user {name}: {e.strerror}") from e
    return Account(name, uid, gid, created=True)


def can_search(st: os.stat_result, uid: int, gid: int, bit: int = 1) -> bool:
    """Whether uid/gid (no other groups) has the permission ``bit`` (1 search/execute, 4 read)
    by ``st``'s mode, as the kernel decides it (owner class, else group class, else other)."""
    mode = st.st_mode
    if st.st_uid == uid:
        return bool(mode & (bit << 6))
    if st.st_gid == gid:
        return bool(mode & (bit << 3))
    return bool(mode & bit)


def first_blocking_dir(path: Path, uid: int, gid: int, *, granted: Path | None = None) -> Path | None:
    """The first directory on the way to ``path`` that uid/gid may not pass through, or None.
    ``granted``: a directory that will be opened to it (not checked, nor what is below it)."""
    path = Path(os.path.realpath(path))
    for d in reversed(path.parents):
        if granted is not None and (d == granted or d.is_relative_to(granted)):
            break
        try:
            st = os.stat(d)
        except OSError:
            return d
        if not can_search(st, uid, gid):
            return d
    return None
