"""A new controller joins the control plane with a controller token.

``join_control_plane`` asks the first controller's mke API (TLS verified against the CA
carried by the token, itself checked against the token's CA hash) for the shared CAs
(server, client, kubelet-serving, front-proxy, etcd; ``legacy-ca.crt`` in a cluster made
before CA separation: mke.pki),
the service-account keys, the Secrets encryption key (``pki.SECRETS_ENCRYPTION``), the
cluster config and what the storage backend needs (etcd: the member list); writes the
keys 0600 into the pki dir; and returns the config and that answer
(``ControllerContext.join``). A controller that joined before (a restart) does not ask
again.

The token's CA stays in memory (``cadata``), never in a file. While the mke API answers
429 or 503 (``Retry-After``) or closes the connection (it is at its connection limit),
the request is retried until ``JOIN_DEADLINE``. The answer is checked whole before
anything is written: at most ``MAX_ANSWER`` bytes, every file name relative to the pki
dir (letters, digits, ``._-``, at most one directory, ending in .crt/.key/.pub; no
``..``, no absolute path), every content valid base64, and the CA it carries the token's
own. Then each file is written atomically (keys 0600, the rest 0644), ``join.json`` last.

A restart finds ``join.json`` and the CA key and asks no one; the token it is given
again may have expired meanwhile, but must still be for this cluster.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import http.client
import json
import re
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any

from mke.config import ClusterConfig, parse_config
from mke.errors import MkeError, TokenError
from mke.node.files import private_dir, write_file_atomic
from mke.tokens import JoinToken, decode_token

JOIN_PATH = "/v1/join/controller"
JOIN_DEADLINE = 120.0  # seconds to keep trying while the mke API is busy
MAX_ANSWER = 1024 * 1024
_FILE_NAME = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)?[A-Za-z0-9_][A-Za-z0-9_.-]*\.(?:crt|key|pub)$")
_RETRY_STATUS = (429, 503)
_LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# The mke API closes a connection over its limits at once: these mean "busy, try again".
_BUSY = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, ssl.SSLEOFError,
         ssl.SSLZeroReturnError, TimeoutError)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _post(u: urllib.parse.SplitResult, ctx: ssl.SSLContext, bearer: str, payload: bytes,
          timeout: float) -> tuple[int, bytes, str | None]:
    conn = http.client.HTTPSConnection(u.hostname or "", u.port or 9443, context=ctx, timeout=timeout)
    try:
        conn.request("POST", JOIN_PATH, body=payload,
                     headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read(MAX_ANSWER + 1)
        return resp.status, data, resp.getheader("Retry-After")
    finally:
        conn.close()


def _request(url: str, ca_pem: str, bearer: str, body: dict[str, Any], *,
             deadline: float | None = None, timeout: float = 30.0) -> dict[str, Any]:
    deadline = JOIN_DEADLINE if deadline is None else deadline
    try:
        u = urllib.parse.urlsplit(url)
        u.port  # noqa: B018 - raises on a bad port
        ctx = ssl.create_default_context(cadata=ca_pem)
    except (ValueError, ssl.SSLError) as e:
        raise TokenError(f"the join token's mke API address or CA cannot be used ({_one_line(str(e))})") from e
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    payload = json.dumps(body).encode()
    end = time.monotonic() + deadline
    delay = 0.5
    while True:
        wait = delay
        try:
            status, data, retry_after = _post(u, ctx, bearer, payload, timeout)
        except ssl.SSLCertVerificationError as e:
            raise TokenError(f"the mke API at {url} is not served with a certificate of the token's CA "
                             f"({e.verify_message}): the token is for another cluster") from None
        except _BUSY as e:
            if time.monotonic() + delay > end:
                raise TokenError(f"the controller's mke API at {url} kept closing the connection for "
                                 f"{deadline:.0f}s ({type(e).__name__}); try again later") from e
        except (OSError, http.client.HTTPException) as e:
            raise TokenError(f"cannot reach the controller's mke API at {url}: "
                             f"{_one_line(str(e) or type(e).__name__)}") from e
        else:
            if status not in _RETRY_STATUS:
                break
            if retry_after and retry_after.strip().isdigit():
                wait = float(retry_after)
            if time.monotonic() + min(wait, 1.0) > end:
                raise TokenError(f"{url} is busy (HTTP {status}: {_error_of(data)}); try again later")
        time.sleep(max(0.0, min(wait, end - time.monotonic())))
        delay = min(delay * 2, 5.0)
    if len(data) > MAX_ANSWER:
        raise TokenError(f"{url} answered more than {MAX_ANSWER} bytes; that is not mke's join API")
    if status != 200:
        raise TokenError(f"{url} refused the join: {_error_of(data) or f'HTTP {status}'}")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise TokenError(f"{url} answered something that is not a join answer (not a JSON object)")
    return doc


def _error_of(data: bytes) -> str:
    try:
        doc = json.loads(data)
        return _one_line(str(doc.get("error", ""))) if isinstance(doc, dict) else ""
    except (ValueError, RecursionError):
        return _one_line(data[:200].decode(errors="replace"))


def checked_files(doc: dict[str, Any], tok: JoinToken, url: str) -> dict[str, bytes]:
    """The answer's files, decoded; refuses the whole answer on one bad name or content."""
    from mke import der
    from mke.pkifiles import SECRETS_ENCRYPTION

    files, config = doc.get("files"), doc.get("config")
    if not isinstance(files, dict) or not isinstance(config, dict):
        raise TokenError(f"{url} answered without files or config; is it mke's join API?")
    out: dict[str, bytes] = {}
    for rel, b64 in files.items():
        if not isinstance(rel, str) or not _FILE_NAME.match(rel):
            raise TokenError(f"the controller sent a bad file name {_one_line(repr(rel), 80)}; nothing was written")
        try:
            out[rel] = base64.b64decode(b64, validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise TokenError(f"the controller sent {rel} in a form that does not decode; nothing was written") from e
    for needed in ("ca.crt", "ca.key", "client-ca.crt", "client-ca.key", "kubelet-serving-ca.crt",
                   "kubelet-serving-ca.key", SECRETS_ENCRYPTION):
        if needed not in out:
            older = " (an older mke? upgrade that controller first)" if needed not in ("ca.crt", "ca.key") else ""
            raise TokenError(f"the controller's answer lacks {needed}{older}; nothing was written")
    try:
        same_ca = der.ca_pin(out["ca.crt"]) == tok.ca_hash
    except ValueError:
        same_ca = False
    if not same_ca:
        raise TokenError("the controller sent a CA that is not the token's; nothing was written")
    return out


def _same_cluster(tok: JoinToken, ca_file: Path) -> None:
    from mke import der

    try:
        ours = der.ca_pin(ca_file.read_bytes())
    except (OSError, ValueError) as e:
        raise MkeError(f"{ca_file}: unreadable ({_one_line(str(e), 120)}); restore it, or run `mke reset` and "
                       "join again") from e
    if ours != tok.ca_hash:
        raise TokenError(f"this controller already belongs to another cluster (its CA is {ca_file}); run "
                         "`mke reset` first to join the token's cluster")


def join_control_plane(token: str, local: ClusterConfig, *, data_dir: Path, name: str | None = None,
                       peer_address: str | None = None, bin_dir: Path | None = None,
                       say: Any = None) -> tuple[ClusterConfig, dict[str, Any]]:
    from mke.node.hostinfo import advertised_address, node_name

    data_dir = Path(data_dir).absolute()
    pki_dir = data_dir / "pki"
    state = data_dir / "join.json"
    joined = state.exists() and (pki_dir / "ca.key").exists()
    # A controller that joined before ignores the token's expiry (its service may pass the
    # same token on every start) but not its cluster.
    tok = decode_token(token, role="controller", now=_LONG_AGO if joined else None)
    if joined:
        _same_cluster(tok, pki_dir / "ca.crt")
    elif not tok.mke_api_url:
        raise TokenError("this controller token carries no mke API address; create it again with mke token create")
    if joined:
        # joined before: keep the same cluster config and members, ask no one
        try:
            doc = json.loads(state.read_text())
            if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
                raise ValueError("no config in it")
        except (OSError, ValueError) as e:
            raise MkeError(f"{state}: unreadable ({_one_line(str(e), 120)}); it records this controller's join: "
                           "restore it, or run `mke reset` and join again with a new token") from e
    else:
        from mke import skew

        # before the token is spent and an etcd learner added: this mke's Kubernetes must fit the cluster's
        skew.check_controller(data_dir, bin_dir, api_url=tok.api_url, ca_pem=tok.ca_pem, say=say)
        addr = peer_address or local.storage.etcd.peer_address or advertised_address(local)
        doc = _request(tok.mke_api_url, tok.ca_pem, tok.bootstrap_token,
                       {"name": name or node_name(), "peer_address": addr})
        files = checked_files(doc, tok, tok.mke_api_url)
        private_dir(data_dir)
        private_dir(pki_dir)
        for rel, content in files.items():
            target = pki_dir / rel
            private_dir(target.parent)
            write_file_atomic(target, content, 0o600 if rel.endswith(".key") else 0o644)
        write_file_atomic(state, json.dumps({k: v for k, v in doc.items() if k != "files"}).encode(), 0o600)
    # registries are a node's own (file paths on that host): a joining controller keeps its mke.yaml's
    cluster = doc.get("config")
    if isinstance(cluster, dict):
        cluster = {k: v for k, v in cluster.items() if k != "registries"}
    cfg = parse_config(cluster, f"{tok.mke_api_url} (cluster config)")
    # This host's own address, not the first controller's.
    from mke.config import with_overrides

    cfg = with_overrides(cfg, **{"api.address": local.api.address, "storage.etcd.peer_address":
                                 local.storage.etcd.peer_address, "registries": local.registries})
    return cfg, {k: v for k, v in doc.items() if k not in ("files", "config")}
