"""The toolchain's error root. Every class has its own exit code.

Only ``build.cli.main`` catches these, prints the one-line message and exits.
"""

from __future__ import annotations


class BuildError(Exception):
    """Root of every error the toolchain reports to a user."""

    exit_code = 1


class UsageError(BuildError):
    """Bad command line: unknown mode, component, arch or flag value."""

    exit_code = 2


class RecipeError(BuildError):
    """A recipe file is malformed; the message names the file and the field."""

    exit_code = 3


class LockfileError(BuildError):
    """recipes.lock is malformed, or a pin is missing where one is required."""

    exit_code = 4


class FetchError(BuildError):
    """A download failed (HTTP status, connection, truncated body, archive member)."""

    exit_code = 5


class DigestMismatchError(FetchError):
    """Downloaded or stored bytes do not match the pinned digest."""

    exit_code = 6


class UnpinnedArtifactError(FetchError):
    """An artifact has no digest in recipes.lock and --allow-unpinned was not given."""

    exit_code = 7


class CacheError(BuildError):
    """The cache directory is unusable or a stored blob is corrupt."""

    exit_code = 8


class DockerError(BuildError):
    """The Docker engine is unreachable or a container operation failed."""

    exit_code = 9


class ComponentBuildError(BuildError):
    """Building a component from source failed."""

    exit_code = 10


class VerificationError(BuildError):
    """An output failed a check: not a static ELF, wrong arch, wrong --version."""

    exit_code = 11


class BundleError(BuildError):
    """Producing dist/mke (runtime, entry, payload, join, SBOM) failed."""

    exit_code = 12
