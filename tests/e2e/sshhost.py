"""Test hosts that run a real OpenSSH server, for ``mke cluster`` (tests/e2e/test_cluster_tool.py).

Each host is a network namespace (tests/e2e/netns.py, prefix ``mkc-``) plus a mount namespace
of its own over the machine's root: the machine's /usr, /etc and /bin (sshd and the login shell
are Debian's), with the directories a node writes made the host's own:

    /var/lib        <BASE>/hosts/<name>/var-lib   (the data dir /var/lib/mke, the detached service file)
    /var/log        <BASE>/hosts/<name>/var-log   (pod logs, the detached service's log)
    /usr/local/bin  <BASE>/hosts/<name>/bin       (where mke cluster puts the mke file)
    /run, /tmp      tmpfs

No service manager runs there (no /run/systemd/system, no OpenRC): the cluster file says
``init: detached``. sshd is ``/usr/sbin/sshd -D -e -f <cfg>`` on port 2222 with a host key made
for the host and the test's client key authorized for root; it is stopped by pid. Mounts that
mke makes (containerd, kubelet) live in the host's mount namespace, which goes with its last
process once the namespace file is unmounted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.bareroot import _is_mountpoint, release_nsdir  # noqa: F401 - release_nsdir: for the tests
from tests.e2e.cluster import fips_build
from tests.e2e.netns import GATEWAY, Host, ip

SSH_PORT = 2222
OVERLAYS = {"/var/lib": "var-lib", "/var/log": "var-log", "/usr/local/bin": "bin"}


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` (no passphrase); returns the public key line.

    On the FIPS build (MKE_E2E_FIPS=1) an ECDSA P-256 pair instead (same file names): there `mke
    cluster` runs asyncssh on the OpenSSL FIPS provider 3.1.2, whose approved signatures are ECDSA
    and RSA, not Ed25519 (docs/fips.md; not measured yet)."""
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    kind = ["-t", "ecdsa", "-b", "256"] if fips_build() else ["-t", "ed25519"]
    run(["ssh-keygen", "-q", *kind, "-N", "", "-C", comment, "-f", str(path)])
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class SSHHost:
    host: Host
    base: Path  # <BASE>/hosts
    authorized_keys: Path
    sshd: subprocess.Popen | None = None
    public_key: str = ""
    listeners: list[subprocess.Popen] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def dir(self) -> Path:
        return self.base / self.name

    @property
    def nsfile(self) -> Path:
        return self.base / ".mntns" / self.name

    def outside(self, inner: str) -> Path:
        """The machine's path of ``inner`` when it is under one of the host's own directories."""
        for mount, sub in OVERLAYS.items():
            if inner == mount or inner.startswith(mount + "/"):
                return self.dir / sub / inner[len(mount):].lstrip("/")
        raise ValueError(f"{inner} is not in one of the host's own directories")

    def wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.host.netns}", f"--mount={self.nsfile}", "--", *argv]

    def _in(self, *argv: str) -> None:
        run(self.wrap(list(argv)))

    def create(self) -> SSHHost:
        for sub in OVERLAYS.values():
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        nsdir = self.nsfile.parent
        nsdir.mkdir(parents=True, exist_ok=True)
        if not _is_mountpoint(nsdir):  # namespace files must sit on a private mount
            run(["mount", "--bind", str(nsdir), str(nsdir)])
            run(["mount", "--make-private", str(nsdir)])
        self.nsfile.touch()
        run(["unshare", f"--mount={self.nsfile}", "--propagation", "private", "true"])
        self._in("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run")
        self._in("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", "/tmp")
        for mount, sub in OVERLAYS.items():
            self._in("mount", "--bind", str(self.dir / sub), mount)
        self._in("mkdir", "-p", "-m", "0755", "/run/sshd")
        self.public_key = keygen(self.dir / "ssh_host_ed25519_key", f"mkc-{self.name}")
        return self

    def start_sshd(self) -> None:
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            f"Port {SSH_PORT}\nListenAddress {self.host.address}\nHostKey {self.dir / 'ssh_host_ed25519_key'}\n"
            f"PidFile /run/sshd-mkc.pid\nAuthorizedKeysFile {self.authorized_keys}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\nPrintMotd no\nMaxSessions 64\nMaxStartups 64\n")
        log = open(self.dir / "sshd.log", "ab")
        self.sshd = subprocess.Popen(self.wrap(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)]), stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.sshd.poll() is not None:
                raise RuntimeError(f"sshd on {self.name} exited: {(self.dir / 'sshd.log').read_text()[-2000:]}")
            probe = subprocess.run(["nsenter", f"--net=/run/netns/{self.host.netns}", "--", "bash", "-c",
                                    f"exec 3<>/dev/tcp/{self.host.address}/{SSH_PORT}"], capture_output=True, timeout=10)
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"sshd on {self.name} does not listen on {SSH_PORT}")

    def hold_port(self, port: int) -> None:
        """Something else listening on ``port`` (a FAIL for mke sysinfo), until ``release_ports``."""
        code = ("import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                f"s.bind(('0.0.0.0', {port})); s.listen(); print('ok', flush=True); time.sleep(3600)")
        p = subprocess.Popen(self.wrap(["python3", "-c", code]), stdout=subprocess.PIPE, start_new_session=True)
        assert p.stdout is not None and p.stdout.readline().strip() == b"ok"
        self.listeners.append(p)

    def release_ports(self) -> None:
        for p in self.listeners:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        self.listeners.clear()

    def power_cut(self) -> None:
        """The host dies as a power cut would: its link goes down first (nothing more leaves it, no FIN,
        no RST), then every process in its network namespace is killed (sshd, the sessions, whatever
        they ran). The mount namespace and its files stay, as a disk does."""
        ip("link", "set", "eth0", "down", ns=self.host.netns)
        pids = ip("netns", "pids", self.host.netns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if self.sshd is not None:
            self.sshd.wait(30)
            self.sshd = None

    def power_on(self) -> None:
        """Back after ``power_cut``: the link up, its default route again (the kernel dropped it with
        the link), sshd started."""
        ip("link", "set", "eth0", "up", ns=self.host.netns)
        ip("route", "replace", "default", "via", GATEWAY, ns=self.host.netns)
        self.start_sshd()

    def mke(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The mke that mke cluster put on this host, run inside it."""
        return subprocess.run(self.wrap(["/usr/local/bin/mke", *args]), capture_output=True, text=True,
                              timeout=timeout, check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def stop_mke(self) -> None:
        """Whatever a failed run left: the detached services stopped, the host reset (by the host's own mke)."""
        from tests.e2e.cluster import stop_holder

        if not (self.dir / "bin" / "mke").exists():
            return
        for role in ("controller", "worker"):
            if (self.dir / "var-lib" / "mke-detached" / f"mke-{role}").exists():
                self.mke("uninstall", role)
        stop_holder(self.dir / "var-lib" / "mke")
        if (self.dir / "var-lib" / "mke" / "run").exists():
            self.mke("reset", "--data-dir", "/var/lib/mke", timeout=600)

    def destroy(self) -> None:
        self.release_ports()
        if self.sshd is not None and self.sshd.poll() is None:
            os.killpg(self.sshd.pid, signal.SIGTERM)
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.sshd.pid, signal.SIGKILL)
                self.sshd.wait(10)
        if self.nsfile.exists():
            subprocess.run(["umount", "-l", str(self.nsfile)], capture_output=True, timeout=60, check=False)
            self.nsfile.unlink(missing_ok=True)
