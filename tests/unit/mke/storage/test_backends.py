"""The storage seam (mke/storage): the registry, what each backend tells the apiserver and
the config, and how a joining controller is admitted or refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mke import storage
from mke.components.context import ControllerContext
from mke.config import parse_config
from mke.errors import ConfigError, UsageError
from mke.logsink import LogSink
from mke.node.binaries import BinaryResolver
from mke.storage.etcd import Etcd
from mke.storage.kine import Kine


def make_ctx(tmp_path: Path, cfg: dict | None = None, join: dict | None = None) -> ControllerContext:
    return ControllerContext(config=parse_config(cfg or {}), data_dir=tmp_path, node_name="ctl-2",
                             api_address="192.0.2.11", binaries=BinaryResolver(tmp_path / "bin", user_bin_dir=True),
                             sink=LogSink(io.StringIO()), join=join)


def flags(c) -> dict[str, str | None]:
    (c.ctx.data_dir / "bin").mkdir(exist_ok=True)
    exe = c.ctx.data_dir / "bin" / c.binary
    exe.write_text("#!/bin/true\n")
    exe.chmod(0o755)
    c.init()
    return {a.split("=", 1)[0]: (a.split("=", 1)[1] if "=" in a else None) for a in c.process_spec().args[1:]}


def test_registry_names_every_backend_and_the_config_follows_it():
    assert storage.NAMES == ("etcd", "kine") and storage.DEFAULT == "etcd"
    assert [b.name for b in storage.every()] == list(storage.NAMES)
    with pytest.raises(ConfigError, match=r"storage.type: 'kin' is not one of etcd, kine \(did you mean 'kine'\?\)"):
        parse_config({"storage": {"type": "kin"}})


def test_apiserver_endpoints(tmp_path):
    etcd_ctx = make_ctx(tmp_path)
    etcd = storage.get("etcd")
    assert etcd.apiserver_endpoint(etcd.component(etcd_ctx)) == ("https://127.0.0.1:2379", True)
    kine_ctx = make_ctx(tmp_path, {"storage": {"type": "kine"}})
    kine = storage.get("kine")
    assert kine.apiserver_endpoint(kine.component(kine_ctx)) == (f"unix://{tmp_path}/run/kine.sock", False)


def test_etcd_ports_clash_with_the_api_ports():
    with pytest.raises(ConfigError, match="storage.etcd.clientPort: port 6443 is already used by api.port"):
        parse_config({"storage": {"etcd": {"clientPort": 6443}}})
    parse_config({"storage": {"type": "kine", "etcd": {"clientPort": 6443}}})  # kine opens no TCP port


def test_a_joining_etcd_member_starts_existing_until_it_has_data(tmp_path):
    join = {"etcd_initial_cluster": "ctl-1=https://192.0.2.10:2380,ctl-2=https://192.0.2.11:2380"}
    f = flags(Etcd(make_ctx(tmp_path, join=join)))
    assert f["--initial-cluster-state"] == "existing"
    assert f["--initial-cluster"] == join["etcd_initial_cluster"]
    (tmp_path / "etcd" / "member").mkdir(parents=True)  # a restart: the member exists
    f = flags(Etcd(make_ctx(tmp_path, join=join)))
    assert f["--initial-cluster-state"] == "new" and f["--initial-cluster"] == "ctl-2=https://192.0.2.11:2380"


def test_sqlite_refuses_a_second_controller_and_shared_databases_admit_it(tmp_path):
    kine = storage.get("kine")
    with pytest.raises(UsageError, match="SQLite on one host.*cannot join"):
        kine.admit_controller(make_ctx(tmp_path, {"storage": {"type": "kine"}}), "ctl-2", "192.0.2.11")
    for dsn in ("postgres://u:p@db:5432/k", "mysql://u:p@tcp(db:3306)/k"):
        ctx = make_ctx(tmp_path, {"storage": {"type": "kine", "kine": {"dataSource": dsn}}})
        assert kine.admit_controller(ctx, "ctl-2", "192.0.2.11") == {}


@pytest.mark.parametrize(("cfg", "error"), [
    ({"storage": {"type": "kine", "kine": {"dataSource": "redis://x"}}}, "storage.kine.dataSource: 'redis://x' has no"),
    ({"storage": {"kine": {"dataSource": "sqlite:///x.db"}}}, "storage.kine.dataSource: is set but storage.type is etcd"),
    ({"extraArgs": {"kine": {"v": 2}}}, "extraArgs.kine: kine does not run with storage.type etcd"),
    ({"storage": {"type": "kine"}, "extraArgs": {"etcd": {"v": 2}}}, "extraArgs.etcd: etcd does not run"),
])
def test_backend_checks_name_the_field(cfg, error):
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_config(cfg)


def test_kine_default_is_sqlite_in_the_data_dir(tmp_path):
    k = Kine(make_ctx(tmp_path, {"storage": {"type": "kine"}}))
    assert "--endpoint" not in flags(k)
    assert k.env()["KINE_ENDPOINT"].startswith(f"sqlite://{tmp_path}/kine/state.db?")


def test_a_learner_left_by_a_failed_join_is_removed_and_the_next_join_goes_through(tmp_path, make_pki):
    """Issue 14.6: etcd takes one learner at a time; a controller admitted as a learner whose join
    then failed (its etcd never started) used to block every later join until `mke etcd leave`.
    Against tests/support/apiservers.py's stand-in of etcd's member API, over mutual TLS."""
    from mke.errors import BusyError
    from mke.storage.etcd import EtcdBackend
    from tests.support.apiservers import EtcdGatewayStandIn, EtcdMember

    srv = EtcdGatewayStandIn()
    pki = make_pki(tmp_path / "pki")
    srv.serve(cert=pki.crt("etcd/server"), key=pki.key("etcd/server"), client_ca=pki.crt("etcd/ca"))
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        ctx = make_ctx(tmp_path, {"storage": {"etcd": {"clientPort": port}}})
        backend = EtcdBackend()
        backend.stale_learner_after = 0.5
        backend.promote_timeout = 1.0  # the promotion thread ends within the test
        srv.unsynced = 10**6  # no learner catches up here: each stays a learner
        # ctl-9 was admitted, then its join failed: a learner that never started
        srv.members.append(EtcdMember(0x9999, "", ["https://192.0.2.19:2380"], learner=True))
        with pytest.raises(BusyError, match=r"learner \(https://192.0.2.19:2380\) from a join that has not started"
                                            r" yet; retry in 1s") as e:
            backend.admit_controller(ctx, "ctl-2", "192.0.2.11")
        assert e.value.retry_after is not None and 0 < e.value.retry_after <= 1.0
        assert [m.peer_urls[0] for m in srv.members] == ["https://192.0.2.10:2380", "https://192.0.2.19:2380"]
        import time

        time.sleep(0.6)
        answer = backend.admit_controller(ctx, "ctl-2", "192.0.2.11")  # the join client's retry
        assert [m.peer_urls[0] for m in srv.members] == ["https://192.0.2.10:2380", "https://192.0.2.11:2380"]
        assert "https://192.0.2.11:2380" in next(iter(answer.values()))
        assert "removed learner https://192.0.2.19:2380" in ctx.sink._stream.getvalue()  # type: ignore[union-attr]
        # a learner that started (it has a name and client URLs) is never removed
        srv.members[-1] = EtcdMember(srv.members[-1].id, "ctl-2", ["https://192.0.2.11:2380"],
                                     ["https://192.0.2.11:2379"], learner=True)
        with pytest.raises(Exception, match="too many learner members"):
            backend.admit_controller(ctx, "ctl-3", "192.0.2.12")
        assert len(srv.members) == 2
    finally:
        srv.stop()
