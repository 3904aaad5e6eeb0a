"""The Kubernetes API of the cluster, reached from ``mke cluster`` through SSH only.

The machine running ``mke cluster`` may not reach the API's address (only SSH is asked of the
hosts), so a controller's kube-apiserver is reached through a local port forward of that
controller's SSH connection (``127.0.0.1:<random>`` here -> ``127.0.0.1:<api.port>`` there;
the API's certificate holds 127.0.0.1). The credentials are the admin kubeconfig that
``mke kubeconfig admin`` prints there: kept in memory (mke.kubeapi hands the key to OpenSSL
through an anonymous memory file), never written here.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from mke.errors import ClusterError, KubeAPIError
from mke.kubeapi import Endpoint, KubeClient

if TYPE_CHECKING:
    from mke.cluster.apply import Cluster, HostState


def endpoint_from_text(text: str, server: str, source: str) -> Endpoint:
    """An Endpoint for ``server`` with the CA and client credentials of a kubeconfig's text."""
    import yaml

    try:
        doc = yaml.safe_load(text)
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        ca = base64.b64decode(cluster["certificate-authority-data"], validate=True)
        cert = base64.b64decode(user["client-certificate-data"], validate=True)
        key = base64.b64decode(user["client-key-data"], validate=True)
    except (KeyError, StopIteration, TypeError, AttributeError, binascii.Error, ValueError, yaml.YAMLError) as e:
        raise KubeAPIError(f"{source}: the admin kubeconfig is not usable ({type(e).__name__}: {e})") from e
    return Endpoint(server=server, ca_data=ca, cert_data=cert, key_data=key, source=source)


class ApiTunnel:
    """A KubeClient for the cluster's API through one controller's SSH connection; another
    controller is taken when the one in use is about to restart (``avoid``)."""

    def __init__(self, cluster: Cluster, api_port: int) -> None:
        self.cluster = cluster
        self.api_port = api_port
        self.via: HostState | None = None
        self.client: KubeClient | None = None
        self._listener: Any = None
        self._kubeconfig: str | None = None

    async def get(self, *, avoid: HostState | None = None) -> KubeClient:
        """A client through a controller whose API is ready (not ``avoid`` unless it is the only one)."""
        if self.client is not None and self.via is not avoid:
            return self.client
        states = [self.cluster.states[h.index] for h in self.cluster.spec.controllers if h.index in self.cluster.states]
        pick = None
        for st in [s for s in states if s is not avoid] + ([avoid] if avoid is not None else []):
            if st.running and await self.cluster.api_ready(st):
                pick = st
                break
        if pick is None:
            if self.client is not None:
                return self.client  # the one there is (a single controller restarting): the caller retries
            h = self.cluster.spec.controllers[0]
            raise ClusterError(h.label, "Kubernetes API", "no controller's API is ready")
        await self.close()
        if self._kubeconfig is None:
            r = await self.cluster.mke_run(pick, "kubeconfig", "admin", "--data-dir", pick.host.data_dir,
                                           step="mke kubeconfig admin", error=ClusterError, timeout=60)
            self._kubeconfig = r.stdout
        import asyncssh

        try:
            self._listener = await pick.remote.conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", self.api_port)
        except (asyncssh.Error, OSError) as e:
            raise ClusterError(pick.host.label, "SSH port forward to the API",
                               f"127.0.0.1:{self.api_port} there: {e}") from e
        server = f"https://127.0.0.1:{self._listener.get_port()}"
        self.client = KubeClient(endpoint_from_text(self._kubeconfig or "", server,
                                                    f"{pick.host.label}'s admin kubeconfig over SSH"), timeout=15)
        self.via = pick
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.via = None
