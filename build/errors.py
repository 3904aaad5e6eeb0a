"""Every error the toolchain (build/, fips/) reports, with its exit code: one table, each code once.

Library code raises these (wrapping lower errors with ``raise ... from e``); only the
``main()`` of a command line (``build.cli``, ``build.fips_check``, ``fips.openssl``,
``fips.runtime``) catches them, and an ``OSError`` too, and hands them to ``report``:
one line on stderr, the class's exit code, no traceback.

    code  class
       1  BuildError              root
       2  UsageError              bad command line
       3  RecipeError             malformed recipe or builder/image spec
       4  LockfileError           recipes.lock malformed or a pin missing
       5  FetchError              download failed
       6  DigestMismatchError     bytes do not match the pinned digest
       7  UnpinnedArtifactError   no pin and no --allow-unpinned
       8  CacheError              cache unusable or a blob corrupt
       9  DockerError             Docker engine unreachable or a container failed
      10  ComponentBuildError     building a component from source failed
      11  VerificationError       an output failed a check (static, arch, FIPS)
      12  BundleError             producing dist/mke failed
      13  GoModuleError           Go module sources failed to download or verify
      14  BuilderImageError       making the Go builder image failed
      15  ImageError              an air-gap OCI image failed
      16  FipsSettingsError       fips/toolchain.toml malformed
      17  HostError               the host refused a file operation (an OSError)
      18  DebianSourceError       a Debian source/binary package failed to verify or unpack
"""

from __future__ import annotations

import os
import sys


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


class GoModuleError(BuildError):
    """Downloading or verifying Go module sources failed."""

    exit_code = 13


class BuilderImageError(BuildError):
    """Making the builder image failed (debootstrap, pinned package versions, Go toolchain)."""

    exit_code = 14


class ImageError(BuildError):
    """An air-gap image could not be built or an archive is not what we wrote."""

    exit_code = 15


class FipsSettingsError(BuildError):
    """fips/toolchain.toml is malformed; the message names the field."""

    exit_code = 16


class DebianSourceError(BuildError):
    """A Debian source or binary package (kind = "debian" recipes) could not be verified or unpacked."""

    exit_code = 18


class HostError(BuildError):
    """The host refused a file operation: an ``OSError`` (permission, not a directory, disk full)
    that reached ``main()``; the message names the path."""

    exit_code = 17

    @classmethod
    def from_os_error(cls, e: OSError) -> HostError:
        return cls(os_error_line(e))


def os_error_line(e: OSError) -> str:
    """``/etc/passwd/linux-amd64: Not a directory``: the path(s) and the system's reason, one line."""
    paths = [os.fsdecode(p) for p in (e.filename, e.filename2) if p is not None]
    reason = e.strerror or str(e) or type(e).__name__
    if isinstance(e, FileExistsError) and paths and not os.path.isdir(paths[0]):
        reason = "exists and is not a directory"  # mkdir(exist_ok=True) on a file
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def report(e: BuildError | OSError, prefix: str = "error: ") -> int:
    """What a ``main()`` does with an error it caught: one line on stderr; returns the exit code."""
    err = e if isinstance(e, BuildError) else HostError.from_os_error(e)
    print(f"{prefix}{err}", file=sys.stderr)
    return err.exit_code
