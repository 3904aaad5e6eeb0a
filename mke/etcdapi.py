"""etcd membership through etcd's JSON gateway (``/v3/cluster/member/*``), with mke's etcd client cert."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mke.errors import KubeAPIError
from mke.kubeapi import Endpoint, HTTPSClient


@dataclass(frozen=True, kw_only=True)
class Member:
    id: str
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool = False


class EtcdClient:
    def __init__(self, url: str, pki_dir: Path, *, timeout: float = 10.0) -> None:
        self.http = HTTPSClient(Endpoint(server=url, ca_file=pki_dir / "etcd" / "ca.crt",
                                         cert_file=pki_dir / "etcd" / "client.crt",
                                         key_file=pki_dir / "etcd" / "client.key"), timeout=timeout)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            status, data = self.http.request("POST", path, json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
        except OSError as e:
            raise KubeAPIError(f"etcd {self.http.endpoint.server}: {e}; is mke server running here?") from e
        doc = json.loads(data or b"{}")
        if status != 200:
            raise KubeAPIError(f"etcd {path}: HTTP {status}: {doc.get('message') or doc.get('error') or doc}")
        return doc

    def members(self) -> list[Member]:
        doc = self._post("/v3/cluster/member/list", {})
        return [Member(id=str(m["ID"]), name=m.get("name", ""), peer_urls=tuple(m.get("peerURLs", [])),
                       client_urls=tuple(m.get("clientURLs", [])), learner=bool(m.get("isLearner")))
                for m in doc.get("members", [])]

    def add_learner(self, peer_url: str) -> tuple[Member, list[Member]]:
        return self.add(peer_url, learner=True)

    def promote(self, member_id: str) -> None:
        self._post("/v3/cluster/member/promote", {"ID": member_id})

    def add(self, peer_url: str, *, learner: bool = False) -> tuple[Member, list[Member]]:
        """Add a member; returns it and the member list to start it with.

        etcd refuses a reconfiguration with "unhealthy cluster" (HTTP 503) until every
        member, including one that just joined, is connected; that passes, so retry.
        """
        deadline = time.monotonic() + 120
        delay = 0.5
        while True:
            try:
                doc = self._post("/v3/cluster/member/add", {"peerURLs": [peer_url], "isLearner": learner})
                break
            except KubeAPIError as e:
                if "unhealthy cluster" not in str(e) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        m = doc["member"]
        new = Member(id=str(m["ID"]), name=m.get("name", ""), peer_urls=tuple(m.get("peerURLs", [])),
                     client_urls=())
        members = [Member(id=str(x["ID"]), name=x.get("name", ""), peer_urls=tuple(x.get("peerURLs", [])),
                          client_urls=tuple(x.get("clientURLs", []))) for x in doc.get("members", [])]
        return new, members

    def remove(self, member_id: str) -> None:
        self._post("/v3/cluster/member/remove", {"ID": member_id})
