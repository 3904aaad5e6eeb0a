"""Fixtures shared by the runtime's unit tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mke.pki import KUBECONFIGS, ClusterPKI, PKIRequest


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
