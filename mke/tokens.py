"""Join tokens: one string carrying the API address, the cluster CA and a bootstrap token.

Format: ``mke1.`` + base64url(zlib(JSON)) with the JSON fields ``role``, ``api``
(https URL of the Kubernetes API), ``mke_api`` (https URL of mke's join API, for
controller tokens), ``ca`` (the cluster CA, PEM), ``ca_hash`` (sha256 of its public
key, checked on decode), ``token`` (``<id>.<secret>``) and ``exp`` (RFC 3339, or null).

The bootstrap token is stored in the cluster as a ``bootstrap.kubernetes.io/token``
secret ``kube-system/bootstrap-token-<id>`` with its expiry, so the apiserver
authenticates workers with it (group ``system:bootstrappers:mke:worker``) and the
controller-manager's token cleaner deletes it once expired. Controller tokens are not
valid against the Kubernetes API; mke's join API checks them against their secret.

Controller tokens must expire, and are single use unless made ``--reusable``: the join
API deletes the secret (with its uid as a precondition, so of two joins racing on two
controllers only one wins) before it admits the controller, and puts it back when the
admission fails, so a failed join can be retried with the same token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
import string
import zlib
from dataclasses import dataclass
from typing import Any

from mke.errors import TokenError, UsageError

PREFIX = "mke1."
ROLES = ("worker", "controller")
SECRET_TYPE = "bootstrap.kubernetes.io/token"
NAMESPACE = "kube-system"
ROLE_LABEL = "mke.io/token-role"
# a token the first successful join deletes (controller tokens unless made --reusable)
SINGLE_USE_LABEL = "mke.io/single-use"
# the node a worker token was first used for (mke.components.csr_approver): it mints for no other
NODE_ANNOTATION = "mke.io/node"
GROUP_PREFIX = "system:bootstrappers:mke:"
_ALPHABET = string.ascii_lowercase + string.digits
_ID_RE = re.compile(r"^[a-z0-9]{6}$")
_SECRET_RE = re.compile(r"^[a-z0-9]{16}$")
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> dt.timedelta | None:
    """``24h``, ``7d``, ``1h30m``, ``90s``; ``0`` means no expiry (None)."""
    if text.strip() == "0":
        return None
    m = _DURATION_RE.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise UsageError(f"--expiry {text!r}: expected a duration such as 24h, 7d, 1h30m (or 0 for none)")
    d, h, mi, s = (int(x or 0) for x in m.groups())
    delta = dt.timedelta(days=d, hours=h, minutes=mi, seconds=s)
    if delta.total_seconds() < 60:
        raise UsageError(f"--expiry {text!r}: at least 1m")
    return delta


def check_lifetime(role: str, ttl: dt.timedelta | None) -> None:
    """Controller tokens must expire: they hand out the cluster's CA keys."""
    if role == "controller" and ttl is None:
        raise UsageError("--expiry 0: controller tokens must expire (they hand out the cluster's CA keys); "
                         "give a lifetime such as 1h")


def new_bootstrap_token() -> tuple[str, str]:
    return ("".join(secrets.choice(_ALPHABET) for _ in range(6)),
            "".join(secrets.choice(_ALPHABET) for _ in range(16)))


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, kw_only=True)
class JoinToken:
    role: str
    api_url: str
    ca_pem: str
    ca_hash: str
    token_id: str
    token_secret: str
    expires: dt.datetime | None = None
    mke_api_url: str = ""

    @property
    def bootstrap_token(self) -> str:
        return f"{self.token_id}.{self.token_secret}"

    def encode(self) -> str:
        doc = {
            "role": self.role,
            "api": self.api_url,
            "mke_api": self.mke_api_url,
            "ca": self.ca_pem,
            "ca_hash": self.ca_hash,
            "token": self.bootstrap_token,
            "exp": _rfc3339(self.expires) if self.expires else None,
        }
        raw = zlib.compress(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), 9)
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def secret_manifest(self, description: str = "", *, single_use: bool = False) -> dict[str, Any]:
        data = {
            "token-id": self.token_id,
            "token-secret": self.token_secret,
            "usage-bootstrap-authentication": "true" if self.role == "worker" else "false",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": f"{GROUP_PREFIX}{self.role}",
            "description": description or f"mke {self.role} join token",
        }
        if self.expires:
            data["expiration"] = _rfc3339(self.expires)
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"bootstrap-token-{self.token_id}", "namespace": NAMESPACE,
                         "labels": {ROLE_LABEL: self.role, **({SINGLE_USE_LABEL: "true"} if single_use else {})}},
            "type": SECRET_TYPE,
            "stringData": data,
        }


# A token holds a CA certificate, two URLs and a bootstrap token: ~2 KB. Bounds checked before
# (and while) decoding, so that a hostile token costs neither time nor memory.
MAX_TOKEN_CHARS = 16 * 1024
MAX_TOKEN_JSON = 64 * 1024


def decode_token(text: str, *, role: str | None = None, now: dt.datetime | None = None) -> JoinToken:
    """Parse and check a token string; ``role`` rejects a token made for the other role."""
    text = text.strip()
    if not text.startswith(PREFIX):
        raise TokenError("the join token is malformed: it does not start with 'mke1.' (copy it whole from "
                         "`mke token create`)")
    body = text[len(PREFIX):]
    if len(body) > MAX_TOKEN_CHARS:  # before any decoding: a hostile token must not cost memory
        raise TokenError(f"the join token is {len(text)} characters long, more than any mke token "
                         f"({MAX_TOKEN_CHARS}); copy it whole from `mke token create`")
    try:
        inflate = zlib.decompressobj()
        raw = inflate.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), MAX_TOKEN_JSON + 1)
        if len(raw) > MAX_TOKEN_JSON or inflate.unconsumed_tail:
            raise TokenError(f"the join token inflates to more than {MAX_TOKEN_JSON} bytes: not an mke token")
        doc = json.loads(raw)
        tok_id, _, tok_secret = doc["token"].partition(".")
        tok = JoinToken(
            role=doc["role"], api_url=doc["api"], mke_api_url=doc.get("mke_api") or "", ca_pem=doc["ca"],
            ca_hash=doc["ca_hash"], token_id=tok_id, token_secret=tok_secret,
            expires=_parse_time(doc["exp"]) if doc.get("exp") else None,
        )
    except (binascii.Error, zlib.error, ValueError, KeyError, TypeError, AttributeError) as e:
        raise TokenError("the join token is malformed (truncated or altered); copy it whole from "
                         "`mke token create`") from e
    if tok.role not in ROLES or not _ID_RE.match(tok.token_id) or not _SECRET_RE.match(tok.token_secret) \
            or not tok.api_url.startswith("https://"):
        raise TokenError("the join token is malformed (bad role, API address or bootstrap token)")
    from mke import der  # not cryptography: a server joining with a token runs for months (mke.der)

    try:
        pin = der.ca_pin(tok.ca_pem)
    except ValueError as e:
        raise TokenError("the join token is malformed: its CA certificate does not parse") from e
    if pin != tok.ca_hash:
        raise TokenError("the join token's CA does not match its CA hash (altered token)")
    now = now or dt.datetime.now(dt.UTC)
    if tok.expires is not None and tok.expires <= now:
        raise TokenError(f"the join token {tok.token_id} expired at {_rfc3339(tok.expires)}; "
                         f"create a new one with `mke token create --role={tok.role}`")
    if role is not None and tok.role != role:
        raise TokenError(f"this is a {tok.role} token, not a {role} token; create one with "
                         f"`mke token create --role={role}`")
    return tok


def token_id(id_or_token: str) -> str:
    """The token id in a token id, ``id.secret`` or a whole join token (TokenError naming it if none)."""
    tok_id = id_or_token.strip()
    if tok_id.startswith(PREFIX):
        tok_id = decode_token(tok_id, now=dt.datetime.min.replace(tzinfo=dt.UTC)).token_id
    elif "." in tok_id:
        tok_id = tok_id.split(".", 1)[0]
    if not _ID_RE.match(tok_id):
        raise TokenError(f"{id_or_token!r} is neither a token id (6 characters) nor a join token")
    return tok_id


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    token_id: str
    role: str
    expires: dt.datetime | None
    description: str
    single_use: bool = False
    node: str = ""  # a worker token's node, once it was used


class TokenStore:
    """Bootstrap-token secrets in kube-system, through the Kubernetes API."""

    def __init__(self, client: Any) -> None:  # mke.kubeapi.KubeClient
        self.client = client

    def create(self, *, role: str, api_url: str, ca_pem: str, ttl: dt.timedelta | None, mke_api_url: str = "",
               description: str = "", now: dt.datetime | None = None, single_use: bool | None = None) -> JoinToken:
        """Store a new token; ``single_use`` defaults to True for controller tokens, which must expire."""
        from mke import der

        if role not in ROLES:
            raise UsageError(f"--role {role!r}: one of {', '.join(ROLES)}")
        check_lifetime(role, ttl)
        if single_use is None:
            single_use = role == "controller"
        now = now or dt.datetime.now(dt.UTC)
        tok_id, tok_secret = new_bootstrap_token()
        tok = JoinToken(
            role=role, api_url=api_url, mke_api_url=mke_api_url if role == "controller" else "", ca_pem=ca_pem,
            ca_hash=der.ca_pin(ca_pem), token_id=tok_id,
            token_secret=tok_secret, expires=(now + ttl).replace(microsecond=0) if ttl else None,
        )
        self.client.create(tok.secret_manifest(description, single_use=single_use))
        return tok

    def list(self) -> list[TokenInfo]:
        out = []
        for s in self.client.list("v1", "Secret", NAMESPACE, field_selector=f"type={SECRET_TYPE}"):
            data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
            groups = data.get("auth-extra-groups", "")
            role = next((r for r in ROLES if f"{GROUP_PREFIX}{r}" in groups.split(",")), "other")
            exp = data.get("expiration")
            meta = s.get("metadata") or {}
            out.append(TokenInfo(token_id=data.get("token-id", "?"), role=role,
                                 expires=_parse_time(exp) if exp else None, description=data.get("description", ""),
                                 single_use=(meta.get("labels") or {}).get(SINGLE_USE_LABEL) == "true",
                                 node=(meta.get("annotations") or {}).get(NODE_ANNOTATION, "")))
        return sorted(out, key=lambda t: (t.role, t.token_id))

    def invalidate(self, id_or_token: str) -> str:
        tok_id = token_id(id_or_token)
        if not self.client.delete("v1", "Secret", f"bootstrap-token-{tok_id}", NAMESPACE):
            raise TokenError(f"no token with id {tok_id} (see `mke token list`)")
        return tok_id

    def check(self, tok: JoinToken, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """Raise TokenError unless ``tok`` is stored, unexpired and for its role (mke's join API);
        returns its secret."""
        s = self.client.get("v1", "Secret", f"bootstrap-token-{tok.token_id}", NAMESPACE)
        if s is None or s.get("type") != SECRET_TYPE:
            raise TokenError(f"token {tok.token_id} is unknown or was invalidated")
        data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        if not secrets.compare_digest(data.get("token-secret", ""), tok.token_secret):
            raise TokenError(f"token {tok.token_id}: wrong secret")
        if f"{GROUP_PREFIX}{tok.role}" not in data.get("auth-extra-groups", "").split(","):
            raise TokenError(f"token {tok.token_id} is not a {tok.role} token")
        exp = data.get("expiration")
        if exp and _parse_time(exp) <= (now or dt.datetime.now(dt.UTC)):
            raise TokenError(f"token {tok.token_id} expired at {exp}")
        return s

    def use(self, tok: JoinToken, *, now: dt.datetime | None = None) -> dict[str, Any] | None:
        """``check``, then spend a single-use token (delete its secret, atomically: of two callers
        only one succeeds; the other gets TokenError). Returns the secret it deleted (for
        ``give_back`` when what the token was for failed), None for a reusable token."""
        s = self.check(tok, now=now)
        if ((s.get("metadata") or {}).get("labels") or {}).get(SINGLE_USE_LABEL) != "true":
            return None
        uid = (s.get("metadata") or {}).get("uid")
        if not self.client.delete("v1", "Secret", f"bootstrap-token-{tok.token_id}", NAMESPACE, uid=uid or None):
            raise TokenError(f"token {tok.token_id} was used already (controller tokens are single use: "
                             "make another with mke token create --role=controller)")
        return s

    def bound(self, token_id: str) -> str:
        """The node a worker token is bound to ("" before its first use)."""
        s = self.client.get("v1", "Secret", f"bootstrap-token-{token_id}", NAMESPACE)
        if s is None or s.get("type") != SECRET_TYPE:
            raise TokenError(f"token {token_id} is unknown or was invalidated")
        return str(((s.get("metadata") or {}).get("annotations") or {}).get(NODE_ANNOTATION, ""))

    def bind(self, token_id: str, node: str) -> str:
        """Bind a worker token to ``node`` on its first use; returns the node it is bound to (``node``,
        or another one it was bound to before). The write carries the version read, so of two
        first uses racing only one binds. TokenError when the token is gone."""
        for _ in range(5):
            s = self.client.get("v1", "Secret", f"bootstrap-token-{token_id}", NAMESPACE)
            if s is None or s.get("type") != SECRET_TYPE:
                raise TokenError(f"token {token_id} is unknown or was invalidated")
            meta = s.get("metadata") or {}
            bound = (meta.get("annotations") or {}).get(NODE_ANNOTATION)
            if bound:
                return str(bound)
            if self.client.apply_unless_changed({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": meta.get("name"), "namespace": NAMESPACE,
                                 "resourceVersion": meta.get("resourceVersion"),
                                 "annotations": {NODE_ANNOTATION: node}}}):
                return node
        raise TokenError(f"token {token_id}: its secret kept changing; could not bind it to node {node}")

    def give_back(self, spent: dict[str, Any]) -> None:
        """Store a spent single-use token again (the join it was spent on failed)."""
        meta = {k: v for k, v in (spent.get("metadata") or {}).items()
                if k in ("name", "namespace", "labels", "annotations")}
        self.client.create({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": spent.get("type"),
                            "data": spent.get("data") or {}})


def token_argument(token: str | None, token_file: Any, env: str | None = None) -> str | None:
    """The join token given on the command line: as an argument, with ``--token-file``, or in the
    environment variable ``env``; None when none was given. A file that cannot be read or holds
    no token is an error, never "no token": a controller would otherwise bootstrap a new
    cluster of its own where the operator meant to join one.

    A token argument is overwritten in mke's own command line (``_hide_argument``) and ``env``
    is taken out of mke's environment, so that no process mke starts inherits it."""
    import os

    from_env = os.environ.pop(env, "").strip() if env else ""
    if token and token_file:
        raise UsageError("give the token once: as an argument or with --token-file, not both")
    if token is not None and not token.strip():
        raise UsageError("the token argument is empty; copy it from `mke token create`")
    if token:
        _hide_argument(token)
        return token.strip()
    if token_file:
        try:
            text = token_file.read_text().strip()
        except OSError as e:
            raise UsageError(f"--token-file {token_file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--token-file {token_file}: not a text file; it must hold one token") from None
        if not text:
            raise UsageError(f"--token-file {token_file} is empty; put the token from `mke token create` in it")
        return text
    return from_env or None


def _hide_argument(token: str) -> None:
    """Take a token given as an argument out of mke's command line (readable by every user);
    warn when that cannot be done (docs/security.md: prefer --token-file)."""
    import sys

    from mke.node.process import hide_in_cmdline

    if not hide_in_cmdline(token):
        print("mke: warning: the token argument could not be hidden from other users of this host (ps); "
              "use --token-file", file=sys.stderr, flush=True)
