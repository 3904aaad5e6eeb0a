"""Every error the runtime (mke/) reports, with its exit code: one table, each code once.

Library code raises these (wrapping lower errors with ``raise ... from e``); only
``mke.cli.main`` catches them, and an ``OSError`` too (as ``HostError``): one line on
stderr, the class's exit code, no traceback (``--debug`` shows it).

    code  class
       1  MkeError            root
       2  UsageError          bad command line
       3  ConfigError         mke.yaml (or a registries file) invalid
       4  PayloadError        embedded payload missing, truncated or tampered with
       5  StagingError        a binary could not be staged
       6  TokenError          join token malformed, expired or for another role/cluster
       7  ComponentError      a supervised component failed to start or become ready
       8  PKIError            certificates or keys could not be made or loaded
       9  NotImplementedYet   a documented feature this build does not provide yet
      10  KubeAPIError        the Kubernetes (or etcd) API answered with an error
      11  BusyError           mke must be stopped (or running) and is not
      12  FipsError           a FIPS requirement is not met
      13  HostError           the host refused a file operation (an OSError)
      14  KernelModuleError   a kernel module mke needs is missing or cannot be loaded
      15  ImageError          a container image could not be built, or an archive is not one mke wrote
      16  PreflightError      the host fails a check a component needs (mke sysinfo)
      17  ServiceError        no service manager (systemd, OpenRC) here, or it refused (mke install/start/stop)
      18  VersionSkewError    this mke's Kubernetes would break the version-skew rules (mke.skew)
      19  BackupError         a backup archive is truncated, damaged, altered or of another cluster
      20  ClusterError        mke cluster: a host unreachable over SSH, its key unknown or wrong, login refused
      21  ClusterPreflightError  mke cluster: a host fails mke sysinfo, or its facts do not fit the cluster file
      22  ClusterInstallError  mke cluster: uploading mke, its config or a token, or mke install, failed on a host
      23  ClusterJoinError    mke cluster: starting a node, making its token or joining it failed
      24  ClusterReadyError   mke cluster: a node did not become ready (Ready) in time
      25  ClusterResetError   mke cluster reset: uninstalling or resetting a host failed
"""

from __future__ import annotations

import os


class MkeError(Exception):
    """Root of every error the runtime reports to a user."""

    exit_code = 1


class UsageError(MkeError):
    """Bad command line or arguments."""

    exit_code = 2


class ConfigError(MkeError):
    """mke.yaml is invalid; the message names the field."""

    exit_code = 3


class PayloadError(MkeError):
    """The executable's embedded payload is missing, truncated or tampered with."""

    exit_code = 4


class StagingError(MkeError):
    """A binary could not be staged into the bin dir."""

    exit_code = 5


class TokenError(MkeError):
    """A join token is malformed, expired, invalidated or for another role/cluster."""

    exit_code = 6


class ComponentError(MkeError):
    """A supervised component failed to start or become ready."""

    exit_code = 7


class PKIError(MkeError):
    """Certificates or keys could not be created or loaded."""

    exit_code = 8


class NotImplementedYet(MkeError):
    """A documented feature that this build does not provide yet."""

    exit_code = 9


class KubeAPIError(MkeError):
    """The Kubernetes API (or etcd's) answered with an error or could not be reached."""

    exit_code = 10


class BusyError(MkeError):
    """The operation needs mke stopped (or running) and it is not, or must wait for another
    one to finish (``retry_after`` seconds, when known); the message says which."""

    exit_code = 11

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FipsError(MkeError):
    """A FIPS requirement is not met: a non-FIPS binary, the FIPS provider missing, a refused key."""

    exit_code = 12


class HostError(MkeError):
    """The host refused a file operation: an ``OSError`` (permission, not a directory, disk full)
    that reached ``main()``; the message names the path."""

    exit_code = 13

    @classmethod
    def from_os_error(cls, e: OSError) -> HostError:
        """``/etc/passwd/pki: Not a directory``: the path(s) and the system's reason, one line."""
        paths = [os.fsdecode(p) for p in (e.filename, e.filename2) if p is not None]
        reason = e.strerror or str(e) or type(e).__name__
        if isinstance(e, FileExistsError) and paths and not os.path.isdir(paths[0]):
            reason = "exists and is not a directory"  # mkdir(exist_ok=True) on a file
        if isinstance(e, PermissionError) and os.geteuid() != 0:
            reason += "; run it as root (sudo mke ...)"
        return cls(f"{' -> '.join(paths)}: {reason}" if paths else reason)


class KernelModuleError(MkeError):
    """A kernel module mke needs is missing or could not be loaded (the message names it)."""

    exit_code = 14


class ImageError(MkeError):
    """A container image could not be built, or an archive is not one mke wrote (the message says which)."""

    exit_code = 15


class PreflightError(MkeError):
    """The host fails a check a component needs (``mke sysinfo`` lists them; the message names the first)."""

    exit_code = 16


class ServiceError(MkeError):
    """The host's service manager cannot run mke as a service: neither systemd nor OpenRC runs here,
    its tool (systemctl, rc-service, rc-update) is missing or failed, or no mke service is installed."""

    exit_code = 17


class VersionSkewError(MkeError):
    """Starting this mke would break Kubernetes' version-skew rules: a kubelet newer than the
    cluster's kube-apiserver, a controller skipping a minor version (mke.skew; docs/upgrade.md)."""

    exit_code = 18


class ClusterError(MkeError):
    """``mke cluster``: a step failed on a host. The message is three lines (the host, the step, the
    remote error). This class is the connect phase (SSH: unreachable, host key unknown or wrong, login
    refused); each subclass is a later phase, with its own exit code."""

    exit_code = 20
    phase = "connect"

    def __init__(self, host: str, step: str, error: str) -> None:
        self.host, self.step, self.error = host, step, " ".join(str(error).split()) or "(no message)"
        super().__init__(f"host: {host}\nstep: {self.phase}: {step}\nerror: {self.error}")


class ClusterPreflightError(ClusterError):
    """A host fails ``mke sysinfo`` for its role, or what it reports does not fit the cluster file."""

    exit_code = 21
    phase = "preflight"


class ClusterInstallError(ClusterError):
    """Uploading the mke file, the config or a token, or ``mke install``, failed on a host."""

    exit_code = 22
    phase = "install"


class ClusterJoinError(ClusterError):
    """Starting a node, creating its join token, or joining it failed."""

    exit_code = 23
    phase = "join"


class ClusterReadyError(ClusterError):
    """A node did not become ready (its control plane, or its Node Ready) in time."""

    exit_code = 24
    phase = "ready"


class ClusterResetError(ClusterError):
    """``mke cluster reset``: uninstalling the service or ``mke reset`` failed on a host."""

    exit_code = 25
    phase = "reset"


class BackupError(MkeError):
    """A backup could not be taken, or an archive is truncated, damaged, altered or belongs to
    another cluster than the data dir it is restored into (the message names the file and member)."""

    exit_code = 19
