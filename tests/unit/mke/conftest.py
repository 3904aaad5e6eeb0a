"""Fixtures shared by the runtime's unit tests."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mke.components.context import ControllerContext
from mke.components.mke_api import Limits, MkeAPI
from mke.config import parse_config
from mke.kubeapi import KubeClient
from mke.logsink import LogSink
from mke.node.binaries import BinaryResolver
from mke.pki import KUBECONFIGS, ClusterPKI, PKIRequest
from mke.tokens import JoinToken, TokenStore
from tests.support import logs
from tests.support.apiservers import EtcdGatewayStandIn, KubeAPIStandIn


@pytest.fixture(scope="session")
def _pki_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {}


@pytest.fixture
def make_pki(_pki_templates: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
             ) -> Callable[..., ClusterPKI]:
    """``make_pki(dir, api_port, cluster="one")``: a ClusterPKI (node ctl-1, API at 127.0.0.1)
    whose kubeconfigs point at ``https://127.0.0.1:<api_port>``.

    Each cluster's keys are made once per session by ``ClusterPKI.ensure`` and copied
    (modes kept), so tests pay a copy rather than a dozen key generations; different
    ``cluster`` names are different CAs.
    """

    def make(dest: Path, api_port: int = 6443, cluster: str = "one") -> ClusterPKI:
        if cluster not in _pki_templates:
            template = tmp_path_factory.mktemp(f"pki-{cluster}") / "pki"
            ClusterPKI(template).ensure(PKIRequest(node_name="ctl-1", api_address="127.0.0.1"))
            _pki_templates[cluster] = template
        shutil.copytree(_pki_templates[cluster], dest)
        pki = ClusterPKI(dest)
        for name, stem in KUBECONFIGS.items():
            pki.write_kubeconfig(name, f"https://127.0.0.1:{api_port}", stem)
        return pki

    return make


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server that takes its port from mke.yaml)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@dataclass
class FirstController:
    """A controller's mke API (the real MkeAPI, on 127.0.0.1) in front of stand-ins for its
    kube-apiserver and etcd (tests/support/apiservers.py), with the pki they all use."""

    ctx: ControllerContext
    kube: KubeAPIStandIn
    etcd: EtcdGatewayStandIn
    api: MkeAPI
    log: io.StringIO

    @property
    def pki(self) -> ClusterPKI:
        return self.ctx.pki

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api.address[1]}"

    def join_token(self, role: str = "controller", ttl: dt.timedelta | None = dt.timedelta(hours=1),
                   single_use: bool | None = None) -> JoinToken:
        """A token made as `mke token create` makes it: a bootstrap-token secret in the (stand-in) API
        (``single_use=False``: as ``--reusable``, for tests that join more than once)."""
        client = KubeClient.from_kubeconfig(self.pki.kubeconfig("admin"))
        return TokenStore(client).create(role=role, api_url=self.kube.url, ca_pem=self.pki.crt("ca").read_text(),
                                         ttl=ttl, mke_api_url=self.url, single_use=single_use)

    def log_lines(self) -> list[str]:
        """``[tag] text`` of every line logged (each must carry its time and level)."""
        return logs.tagged(self.log.getvalue())


@pytest.fixture
def first_controller(tmp_path: Path, make_pki: Callable[..., ClusterPKI]) -> Iterator[Callable[..., FirstController]]:
    """``first_controller(config=None, limits=None)``: start one; everything is stopped afterwards."""
    started: list[FirstController] = []

    def start(config: dict | None = None, limits: Limits | None = None) -> FirstController:
        kube, etcd = KubeAPIStandIn(), EtcdGatewayStandIn()
        data = tmp_path / f"ctl{len(started) + 1}"
        data.mkdir(mode=0o700)
        pki = make_pki(data / "pki", kube.port)
        kube.serve(cert=pki.crt("apiserver"), key=pki.key("apiserver"), client_ca=pki.client_ca_file,
                   require_client_cert=False)
        etcd.serve(cert=pki.crt("etcd/server"), key=pki.key("etcd/server"), client_ca=pki.crt("etcd/ca"))
        cfg = {"api": {"port": kube.port, "mkeAPIPort": free_port()},
               "storage": {"etcd": {"clientPort": etcd.port}}}
        for section, values in (config or {}).items():
            cfg.setdefault(section, {}).update(values)
        log = io.StringIO()
        ctx = ControllerContext(config=parse_config(cfg), data_dir=data, node_name="ctl-1", api_address="127.0.0.1",
                                binaries=BinaryResolver(data / "bin", user_bin_dir=True), sink=LogSink(log))
        api = MkeAPI(ctx, host="127.0.0.1", limits=limits)
        fc = FirstController(ctx=ctx, kube=kube, etcd=etcd, api=api, log=log)
        started.append(fc)
        api.start()
        return fc

    yield start
    for fc in started:
        fc.api.stop()
        fc.kube.stop()
        fc.etcd.stop()
