"""mke status's health (issue 19.4): components, the API, certificate expiry; exit 7 when unhealthy."""

from __future__ import annotations

import datetime as dt
import json
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mke import cli
from mke.commands.status import certificates, health
from mke.errors import ComponentError
from mke.node.datadir import DataDirLock, StatusFile


def doc(role="worker", state="running", **kw):
    return {"role": role, "phase": "running", "pid": 1, "started_at": 0, "api_port": kw.pop("api_port", 1),
            "components": [{"name": "containerd", "state": "running", "pid": 1},
                           {"name": "kubelet", "state": state, "pid": 1}], **kw}


def self_signed(path, days):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=400)).not_valid_after(now + dt.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_a_healthy_worker(tmp_path, make_pki):
    make_pki(tmp_path / "pki")
    h = health(doc(), tmp_path)
    assert h["healthy"] and h["problems"] == [] and h["api_ready"] is None
    assert {c["file"] for c in h["certificates"]} >= {"pki/ca.crt", "pki/admin.crt"}
    assert all(c["days_left"] > 300 for c in h["certificates"])


def test_a_restarting_component_is_a_problem(tmp_path):
    h = health(doc(state="restarting"), tmp_path)
    assert not h["healthy"] and h["problems"] == ["kubelet is restarting"]


def test_certificates_expired_and_expiring(tmp_path):
    self_signed(tmp_path / "pki" / "old.crt", -1)
    self_signed(tmp_path / "worker" / "pki" / "kubelet-client-2026.pem", 10)
    (tmp_path / "pki" / "not-a-cert.crt").write_text("junk")
    certs = {c["file"]: c for c in certificates(tmp_path)}
    assert set(certs) == {"pki/old.crt", "worker/pki/kubelet-client-2026.pem"}
    h = health(doc(), tmp_path)
    assert not h["healthy"] and h["problems"][0].startswith("certificate pki/old.crt expired at ")
    assert h["warnings"][0].startswith("certificate worker/pki/kubelet-client-2026.pem expires in 10 days")


def test_a_controller_whose_api_does_not_answer_is_unhealthy(tmp_path, make_pki):
    make_pki(tmp_path / "pki")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h = health(doc(role="controller", api_port=port), tmp_path)
    assert not h["healthy"] and h["problems"][0].startswith("the Kubernetes API is not ready")


def test_status_exits_7_when_unhealthy_and_0_when_healthy(tmp_path, capsys):
    lock = DataDirLock(tmp_path)
    lock.acquire()
    try:
        StatusFile(tmp_path).write(doc(state="restarting"))
        assert cli.main(["status", "--data-dir", str(tmp_path)]) == ComponentError.exit_code
        out = capsys.readouterr().out
        assert "problem:    kubelet is restarting" in out and "health:     UNHEALTHY" in out
        StatusFile(tmp_path).write(doc())
        assert cli.main(["status", "--json", "--data-dir", str(tmp_path)]) == 0
        assert json.loads(capsys.readouterr().out)["health"]["healthy"] is True
    finally:
        lock.release()
