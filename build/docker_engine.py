"""The one place the toolchain talks to a Docker engine (through the Docker SDK, docker-py).

``DockerEngine.connect()`` reaches the engine or raises one clear ``DockerError`` that
says how to start one or which other mode to use. ``engine.container(...)`` is a context
manager that always removes its container on the way out, unless ``MKE_KEEP_CONTAINERS=1``
asks to keep it for debugging (its ID is printed then).
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from build.errors import DockerError
from build.progress import log

KEEP_ENV = "MKE_KEEP_CONTAINERS"
# Docker labels every object the toolchain creates, so leftovers are easy to find.
LABEL = "dev.mke.toolchain"

HOW_TO_START = (
    "start it with `sudo dockerd &` (Debian: `sudo apt-get install docker.io`; or run scripts/bootstrap.sh), "
    "or build without an engine: --mode=fetch (upstream release binaries) or --mode=none (binaries from PATH)"
)


def keep_containers() -> bool:
    return os.environ.get(KEEP_ENV, "") not in ("", "0", "false", "no")


class RunningContainer:
    """A created container: start it, stream its output, wait, copy files out."""

    def __init__(self, engine: "DockerEngine", container: Any, name: str):
        self._engine = engine
        self._c = container
        self.name = name

    @property
    def id(self) -> str:
        return self._c.id

    def run(self, on_line: Callable[[str], None]) -> int:
        """Start the container, pass each output line (stdout and stderr) to ``on_line``, return the exit code."""
        try:
            self._c.start()
            pending = b""
            for chunk in self._c.logs(stream=True, follow=True, stdout=True, stderr=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode("utf-8", "replace").rstrip("\r"))
            if pending:
                on_line(pending.decode("utf-8", "replace"))
            status = self._c.wait()
        except Exception as e:  # docker.errors.* and requests errors
            raise DockerError(f"container {self.name}: {e}") from e
        return int(status.get("StatusCode", 1))

    def copy_out(self, path: str, dest: Path) -> dict[str, Path]:
        """Copy the regular files under ``path`` in the container to ``dest`` (SDK get_archive).

        Returns {file name: host path}. Only regular files directly inside ``path`` are
        taken; links, devices and names with path separators are refused.
        """
        dest.mkdir(parents=True, exist_ok=True)
        try:
            stream, _ = self._c.get_archive(path)
            buf = io.BytesIO()
            for chunk in stream:
                buf.write(chunk)
        except Exception as e:
            raise DockerError(f"container {self.name}: cannot copy {path} out: {e}") from e
        buf.seek(0)
        out: dict[str, Path] = {}
        top = Path(path.rstrip("/")).name
        with tarfile.open(fileobj=buf, mode="r:") as tar:
            for info in tar:
                parts = Path(info.name).parts
                if len(parts) != 2 or parts[0] != top:
                    continue  # the directory entry itself, or something nested
                if not info.isfile():
                    raise DockerError(f"container {self.name}: {info.name} is not a regular file")
                name = parts[1]
                src = tar.extractfile(info)
                assert src is not None
                target = dest / name
                with src, open(target, "wb") as f:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
                os.chmod(target, 0o755)
                out[name] = target
        return out


class DockerEngine:
    """A connection to the Docker engine (``DOCKER_HOST`` or the local socket)."""

    def __init__(self, client: Any):
        self.client = client
        self._volume_lock = threading.Lock()

    @classmethod
    def connect(cls, timeout: int = 600) -> "DockerEngine":
        try:
            import docker
        except ImportError as e:  # pragma: no cover - pinned in requirements/build.txt
            raise DockerError("the Docker SDK (pip package `docker`) is not installed; run the build through nox") from e
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        try:
            client = docker.from_env(version="auto", timeout=timeout)
            client.ping()
        except Exception as e:
            raise DockerError(f"no Docker engine at {host} ({type(e).__name__}); {HOW_TO_START}") from e
        return cls(client)

    def server_version(self) -> str:
        return str(self.client.version().get("Version", "?"))

    # ----------------------------------------------------------- images
    def image_id(self, ref: str) -> str | None:
        """The image ID (sha256:...) of a local image, or None if there is none."""
        import docker.errors

        try:
            return self.client.images.get(ref).id
        except docker.errors.ImageNotFound:
            return None
        except Exception as e:
            raise DockerError(f"cannot inspect image {ref}: {e}") from e

    def import_rootfs(self, tar_path: Path, ref: str, changes: list[str]) -> str:
        """``docker import`` a root filesystem tarball as ``ref``; returns the image ID."""
        repo, _, tag = ref.rpartition(":")
        try:
            with open(tar_path, "rb") as f:
                self.client.api.import_image_from_data(f, repository=repo, tag=tag, changes=changes)
        except Exception as e:
            raise DockerError(f"docker import {tar_path} as {ref} failed: {e}") from e
        image = self.image_id(ref)
        if image is None:
            raise DockerError(f"docker import reported success but {ref} does not exist")
        return image

    def build_image(self, context_tar: Path, ref: str, on_line: Callable[[str], None], labels: dict[str, str]) -> str:
        """``docker build`` from a tar build context (its Dockerfile at the top); returns the image ID.

        The Dockerfile must only use local images (FROM an imported base): no registry is
        assumed to be reachable, so ``pull`` is off and the build runs with --network=none.
        """
        try:
            with open(context_tar, "rb") as f:
                stream = self.client.api.build(
                    fileobj=f, custom_context=True, tag=ref, rm=True, forcerm=True, pull=False,
                    network_mode="none", labels=labels, decode=True,
                )
                for item in stream:
                    if "error" in item:
                        raise DockerError(f"docker build of {ref} failed: {item['error'].strip()}")
                    text = item.get("stream", "")
                    for line in text.splitlines():
                        if line.strip():
                            on_line(line.rstrip())
        except DockerError:
            raise
        except Exception as e:
            raise DockerError(f"docker build of {ref} failed: {e}") from e
        image = self.image_id(ref)
        if image is None:
            raise DockerError(f"docker build reported success but {ref} does not exist")
        return image

    # ----------------------------------------------------------- volumes
    def ensure_volume(self, name: str) -> None:
        """Create the named volume if it does not exist (e.g. the persistent Go build cache)."""
        import docker.errors

        with self._volume_lock:
            try:
                self.client.volumes.get(name)
            except docker.errors.NotFound:
                try:
                    self.client.volumes.create(name=name, labels={LABEL: "go-build-cache"})
                except Exception as e:
                    raise DockerError(f"cannot create volume {name}: {e}") from e
            except Exception as e:
                raise DockerError(f"cannot inspect volume {name}: {e}") from e

    def remove_volume(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.client.volumes.get(name).remove(force=True)

    # ----------------------------------------------------------- containers
    @contextlib.contextmanager
    def container(
        self,
        *,
        image: str,
        command: list[str],
        name: str,
        env: dict[str, str] | None = None,
        binds: dict[str, dict[str, str]] | None = None,
        workdir: str | None = None,
        network: bool = False,
        user: str | None = None,
    ) -> Iterator[RunningContainer]:
        """Create a container and always remove it afterwards (``MKE_KEEP_CONTAINERS=1`` keeps it).

        ``binds`` maps a host path or volume name to {"bind": container path, "mode": "ro"|"rw"}.
        The container has no network unless ``network`` is true.
        """
        try:
            c = self.client.containers.create(
                image=image,
                name=f"{name}-{uuid.uuid4().hex[:6]}",
                command=command,
                environment=env or {},
                volumes=binds or {},
                working_dir=workdir,
                network_mode=None if network else "none",
                labels={LABEL: name},
                user=user,
                detach=True,
            )
        except Exception as e:
            raise DockerError(f"cannot create container {name} from {image}: {e}") from e
        try:
            yield RunningContainer(self, c, name)
        finally:
            if keep_containers():
                log(name, f"keeping container {c.id[:12]} ({KEEP_ENV}=1); remove it with `docker rm -f {c.id[:12]}`")
            else:
                with contextlib.suppress(Exception):
                    c.remove(force=True, v=True)
