"""The runtime's error root; every class has its own exit code. Only ``mke.cli.main`` catches."""

from __future__ import annotations


class MkeError(Exception):
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
    """The operation needs mke stopped (or running) and it is not; the message says which."""

    exit_code = 11


class FipsError(MkeError):
    """A FIPS requirement is not met: a non-FIPS binary, the FIPS provider missing, a refused key."""

    exit_code = 12


class KernelModuleError(MkeError):
    """A kernel module mke needs is missing or could not be loaded (the message names it)."""

    exit_code = 14
