"""mke/etcdapi.py: EtcdClient's member list, learner add (with etcd's "unhealthy cluster"
retry), promotion and removal, over mutual TLS with the etcd CA's client certificate.

The server is tests/support/apiservers.py's EtcdGatewayStandIn: real HTTPS on 127.0.0.1
with the etcd server certificate that mke/pki.py's ClusterPKI makes, requiring a client
certificate of the etcd CA, standing in for etcd's gRPC-gateway JSON API (the real etcd
is exercised by tests/integration/test_server*.py). It answers in the gateway's shapes:
string-encoded uint64 IDs, ``{"error", "code", "message"}`` errors with their HTTP codes.
"""

from __future__ import annotations

import json
import time

import pytest

from mke.errors import KubeAPIError
from mke.etcdapi import EtcdClient, Member
from tests.support.apiservers import EtcdGatewayStandIn, silent_listener


@pytest.fixture
def etcd(tmp_path, make_pki):
    """(client, server): EtcdClient with the pki's etcd client certificate, and the stand-in."""
    srv = EtcdGatewayStandIn()
    pki = make_pki(tmp_path / "pki")
    srv.serve(cert=pki.crt("etcd/server"), key=pki.key("etcd/server"), client_ca=pki.crt("etcd/ca"))
    yield EtcdClient(srv.url, pki.dir, timeout=5.0), srv
    srv.stop()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def test_members_are_listed_with_string_ids_over_mutual_tls(etcd):
    client, srv = etcd
    assert client.members() == [Member(id=str(0x1111), name="ctl-1", peer_urls=("https://192.0.2.10:2380",),
                                       client_urls=("https://127.0.0.1:2379",), learner=False)]
    seen = srv.seen[-1]
    assert (seen.method, seen.path, json.loads(seen.body)) == ("POST", "/v3/cluster/member/list", {})
    assert seen.client_cn == "mke-etcd-client"


def test_a_learner_is_added_promoted_and_removed(etcd):
    client, srv = etcd
    new, members = client.add_learner("https://192.0.2.11:2380")
    assert json.loads(srv.seen[-1].body) == {"peerURLs": ["https://192.0.2.11:2380"], "isLearner": True}
    assert new.learner and new.peer_urls == ("https://192.0.2.11:2380",) and new.name == ""
    assert new.id == str(srv.members[-1].id)  # the uint64 keeps every digit (no float on the way)
    assert [m.peer_urls[0] for m in members] == ["https://192.0.2.10:2380", "https://192.0.2.11:2380"]

    with pytest.raises(KubeAPIError) as e:  # etcd allows one learner at a time
        client.add_learner("https://192.0.2.12:2380")
    assert one_line(e) == "etcd /v3/cluster/member/add: HTTP 400: etcdserver: too many learner members in cluster"

    srv.unsynced = 1
    with pytest.raises(KubeAPIError) as e:
        client.promote(new.id)
    assert "can only promote a learner member which is in sync with leader" in one_line(e)
    client.promote(new.id)
    assert json.loads(srv.seen[-1].body) == {"ID": new.id}
    assert [m.learner for m in client.members()] == [False, False]
    with pytest.raises(KubeAPIError, match="HTTP 400: etcdserver: can only promote a learner member$"):
        client.promote(new.id)

    client.remove(new.id)
    assert [m.name for m in client.members()] == ["ctl-1"]
    with pytest.raises(KubeAPIError) as e:
        client.remove(new.id)
    assert one_line(e) == "etcd /v3/cluster/member/remove: HTTP 404: etcdserver: member not found"


def test_add_waits_out_an_unhealthy_cluster_and_gives_up_at_its_deadline(etcd):
    client, srv = etcd
    srv.unhealthy = 2
    t0 = time.monotonic()
    new, _ = client.add("https://192.0.2.11:2380")
    assert time.monotonic() - t0 >= 1.5  # 0.5 s, then 1 s
    assert not new.learner
    assert [s.path for s in srv.seen].count("/v3/cluster/member/add") == 3

    srv.unhealthy = 100
    client.retry_deadline = 1.0
    with pytest.raises(KubeAPIError) as e:
        client.add("https://192.0.2.12:2380")
    assert one_line(e) == "etcd /v3/cluster/member/add: HTTP 503: etcdserver: unhealthy cluster"


def test_other_errors_are_not_retried_and_odd_answers_are_one_line(etcd):
    client, srv = etcd
    srv.fail(400, {"error": "etcdserver: Peer URLs already exists", "code": 9})
    with pytest.raises(KubeAPIError, match="Peer URLs already exists"):
        client.add("https://192.0.2.11:2380")
    assert [s.path for s in srv.seen].count("/v3/cluster/member/add") == 1

    srv.fail(502, b"<html>\nBad Gateway\n</html>")
    with pytest.raises(KubeAPIError) as e:
        client.members()
    assert one_line(e) == ("etcd /v3/cluster/member/list: HTTP 502: the answer is not a JSON object "
                           "('<html> Bad Gateway </html>')")

    srv.fail(200, {"header": {}, "members": [{"name": "no id"}]})
    with pytest.raises(KubeAPIError) as e:
        client.members()
    assert one_line(e) == "etcd /v3/cluster/member/list: a member without 'ID' in the answer"

    srv.fail(200, {"header": {}})
    with pytest.raises(KubeAPIError, match="the answer names no new member"):
        client.add("https://192.0.2.13:2380")


def test_unreachable_silent_and_foreign_servers(etcd, tmp_path, make_pki):
    client, srv = etcd
    pki_dir = tmp_path / "pki"
    port = srv.port
    srv.stop()
    with pytest.raises(KubeAPIError) as e:
        client.members()
    msg = one_line(e)
    assert msg.startswith(f"etcd https://127.0.0.1:{port}: ") and msg.endswith("is mke server running here?")

    sock, silent = silent_listener()
    try:
        t0 = time.monotonic()
        with pytest.raises(KubeAPIError) as e:
            EtcdClient(f"https://127.0.0.1:{silent}", pki_dir, timeout=0.5).members()
        assert "timed out" in one_line(e) and time.monotonic() - t0 < 5
    finally:
        sock.close()

    other = EtcdGatewayStandIn()  # another cluster's etcd
    other_pki = make_pki(tmp_path / "other", cluster="other")
    other.serve(cert=other_pki.crt("etcd/server"), key=other_pki.key("etcd/server"), client_ca=other_pki.crt("etcd/ca"))
    try:
        with pytest.raises(KubeAPIError) as e:
            EtcdClient(other.url, pki_dir).members()
        assert "its certificate does not verify" in one_line(e)
        assert other.seen == []
    finally:
        other.stop()


def test_a_client_certificate_of_another_ca_is_refused_by_the_server(etcd, tmp_path, make_pki):
    client, srv = etcd
    other_pki = make_pki(tmp_path / "other", cluster="other")
    for name in ("ca.crt",):  # trust our server, present the other cluster's client certificate
        (other_pki.dir / "etcd" / name).write_bytes((tmp_path / "pki" / "etcd" / name).read_bytes())
    with pytest.raises(KubeAPIError) as e:
        EtcdClient(srv.url, other_pki.dir).members()
    assert one_line(e).endswith("is mke server running here?")
    assert srv.seen == []


def test_missing_certificates_name_the_file(tmp_path):
    with pytest.raises(KubeAPIError) as e:
        EtcdClient("https://127.0.0.1:2379", tmp_path / "pki")
    assert one_line(e).startswith(f"{tmp_path}/pki/etcd/ca.crt: cannot load TLS material")


def test_a_missing_client_key_names_the_files(tmp_path, make_pki):
    pki = make_pki(tmp_path / "pki")
    pki.key("etcd/client").unlink()
    with pytest.raises(KubeAPIError) as e:
        EtcdClient("https://127.0.0.1:2379", pki.dir)
    assert one_line(e).startswith(f"{pki.crt('etcd/client')} or {pki.key('etcd/client')}: cannot load TLS material")
