"""etcd membership through etcd's JSON gateway (``/v3/cluster/member/*``), with mke's etcd client cert.

The gateway encodes member IDs (uint64) as JSON strings; they stay strings here. Every
failure is a ``KubeAPIError`` with a one-line message.
"""

from __future__ import annotations

import http.client
import json
import ssl
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


def _member(m: dict[str, Any]) -> Member:
    return Member(id=str(m["ID"]), name=m.get("name", ""), peer_urls=tuple(m.get("peerURLs", [])),
                  client_urls=tuple(m.get("clientURLs", [])), learner=bool(m.get("isLearner")))


class EtcdClient:
    def __init__(self, url: str, pki_dir: Path, *, timeout: float = 10.0) -> None:
        self.http = HTTPSClient(Endpoint(server=url, ca_file=pki_dir / "etcd" / "ca.crt",
                                         cert_file=pki_dir / "etcd" / "client.crt",
                                         key_file=pki_dir / "etcd" / "client.key"), timeout=timeout)
        self.retry_deadline = 120.0  # how long add() waits out "unhealthy cluster"

    @property
    def server(self) -> str:
        return self.http.endpoint.server

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            status, data = self.http.request("POST", path, json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
        except ssl.SSLCertVerificationError as e:
            raise KubeAPIError(f"etcd {self.server}: its certificate does not verify ({e.verify_message})") from e
        except (OSError, http.client.HTTPException) as e:
            reason = " ".join((str(e) or type(e).__name__).split())
            raise KubeAPIError(f"etcd {self.server}: {reason}; is mke server running here?") from e
        try:
            doc = json.loads(data or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            text = " ".join(data[:200].decode(errors="replace").split())
            raise KubeAPIError(f"etcd {path}: HTTP {status}: the answer is not a JSON object ({text!r})")
        if status != 200:
            reason = " ".join(str(doc.get("message") or doc.get("error") or doc).split())
            raise KubeAPIError(f"etcd {path}: HTTP {status}: {reason}")
        return doc

    def _members_of(self, path: str, doc: dict[str, Any]) -> list[Member]:
        try:
            return [_member(m) for m in doc.get("members") or []]
        except (KeyError, TypeError, AttributeError) as e:
            raise KubeAPIError(f"etcd {path}: a member without {e} in the answer") from e

    def members(self) -> list[Member]:
        return self._members_of("/v3/cluster/member/list", self._post("/v3/cluster/member/list", {}))

    def add_learner(self, peer_url: str) -> tuple[Member, list[Member]]:
        return self.add(peer_url, learner=True)

    def promote(self, member_id: str) -> None:
        self._post("/v3/cluster/member/promote", {"ID": member_id})

    def add(self, peer_url: str, *, learner: bool = False) -> tuple[Member, list[Member]]:
        """Add a member; returns it and the member list to start it with.

        etcd refuses a reconfiguration with "unhealthy cluster" (HTTP 503) until every
        member, including one that just joined, is connected; that passes, so retry.
        """
        path = "/v3/cluster/member/add"
        deadline = time.monotonic() + self.retry_deadline
        delay = 0.5
        while True:
            try:
                doc = self._post(path, {"peerURLs": [peer_url], "isLearner": learner})
                break
            except KubeAPIError as e:
                if "unhealthy cluster" not in str(e) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if not isinstance(doc.get("member"), dict):
            raise KubeAPIError(f"etcd {path}: the answer names no new member")
        try:
            new = _member(doc["member"])
        except (KeyError, TypeError) as e:
            raise KubeAPIError(f"etcd {path}: the new member has no {e}") from e
        return new, self._members_of(path, doc)

    def remove(self, member_id: str) -> None:
        self._post("/v3/cluster/member/remove", {"ID": member_id})
