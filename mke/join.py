"""A new controller joins the control plane with a controller token.

``join_control_plane`` asks the first controller's mke API (TLS verified against the CA
carried by the token, itself checked against the token's CA hash) for the shared CAs,
the service-account keys, the cluster config and what the storage backend needs (etcd:
the member list); writes the keys 0600 into the pki dir; and returns the config and that
answer (``ControllerContext.join``). A controller that joined before (a restart) does not
ask again.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from mke.config import ClusterConfig, parse_config
from mke.errors import TokenError
from mke.node.files import write_file_atomic
from mke.tokens import decode_token


def _request(url: str, ca_pem: str, bearer: str, body: dict[str, Any]) -> dict[str, Any]:
    u = urllib.parse.urlsplit(url)
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as f:
        f.write(ca_pem)
        f.flush()
        ctx = ssl.create_default_context(cafile=f.name)
    conn = http.client.HTTPSConnection(u.hostname or "", u.port or 9443, context=ctx, timeout=30)
    try:
        conn.request("POST", "/v1/join/controller", body=json.dumps(body).encode(),
                     headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise TokenError(f"cannot reach the controller's mke API at {url}: {e}") from e
    finally:
        conn.close()
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {"error": data[:200].decode(errors="replace")}
    if resp.status != 200:
        raise TokenError(f"{url} refused the join: {doc.get('error', resp.status)}")
    return doc


def join_control_plane(token: str, local: ClusterConfig, *, data_dir: Path, name: str | None = None,
                       peer_address: str | None = None) -> tuple[ClusterConfig, dict[str, Any]]:
    from mke.node.hostinfo import advertised_address, node_name

    tok = decode_token(token, role="controller")
    if not tok.mke_api_url:
        raise TokenError("this controller token carries no mke API address; create it again with mke token create")
    data_dir = Path(data_dir).absolute()
    pki_dir = data_dir / "pki"
    state = data_dir / "join.json"
    addr = peer_address or local.storage.etcd.peer_address or advertised_address(local)
    if state.exists() and (pki_dir / "ca.key").exists():
        doc = json.loads(state.read_text())  # joined before: keep the same cluster config and members
    else:
        doc = _request(tok.mke_api_url, tok.ca_pem, tok.bootstrap_token,
                       {"name": name or node_name(), "peer_address": addr})
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(data_dir, 0o700)
        for rel, b64 in doc["files"].items():
            if ".." in rel.split("/"):
                raise TokenError(f"the controller sent a bad file name {rel!r}")
            (pki_dir / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_file_atomic(pki_dir / rel, base64.b64decode(b64), 0o600 if rel.endswith(".key") else 0o644)
        write_file_atomic(state, json.dumps({k: v for k, v in doc.items() if k != "files"}).encode(), 0o600)
    cfg = parse_config(doc["config"], f"{tok.mke_api_url} (cluster config)")
    # This host's own address, not the first controller's.
    from mke.config import with_overrides

    cfg = with_overrides(cfg, **{"api.address": local.api.address, "storage.etcd.peer_address":
                                 local.storage.etcd.peer_address})
    return cfg, {k: v for k, v in doc.items() if k not in ("files", "config")}
