"""recipes/conformance/: the conformance suite's recipes, image specs and lock agree with each other
and with the images upstream's e2e manifest (test/utils/image/manifest.go, v1.37.2) names."""

from __future__ import annotations

from pathlib import Path

import pytest

from build.airgap import load_image_specs
from build.lockfile import Lockfile
from build.recipes import DebianSource, load_recipes

REPO = Path(__file__).resolve().parents[3]
CONFORMANCE = REPO / "recipes" / "conformance"
E2E = "registry.k8s.io/e2e-test-images"
# What the [Conformance] tests of k8s.io/kubernetes v1.37.2 pull (manifest.go), exactly as named there.
EXPECTED_REFS = {
    f"{E2E}/agnhost:2.66.1", f"{E2E}/agnhost:2.55", f"{E2E}/busybox:1.37.0-2", f"{E2E}/nginx:1.27.0-2",
    f"{E2E}/kitten:1.8", f"{E2E}/nautilus:1.8", f"{E2E}/glibc-dns-testing:2.1.1", f"{E2E}/nonroot:1.5",
    f"{E2E}/nonewprivs:1.4", f"{E2E}/sample-apiserver:1.29.2", "registry.k8s.io/etcd:3.7.0-0",
    "registry.k8s.io/pause:3.10.2",
}
RECIPES = load_recipes(CONFORMANCE)
SPECS = load_image_specs(CONFORMANCE / "images")
LOCK = Lockfile.load(CONFORMANCE / "recipes.lock")


def _ref(spec) -> str:
    return spec.reference(RECIPES[spec.component].version if spec.component else "")


def test_specs_name_exactly_the_manifest_images():
    assert {_ref(s) for s in SPECS.values()} == EXPECTED_REFS


def test_suite_and_tools_are_built():
    binaries = {b.name: r for r in RECIPES.values() for b in r.binaries}
    assert {"e2e.test", "ginkgo", "registry"} <= set(binaries)
    main = load_recipes(REPO / "recipes")
    embedded = main["kubernetes"].version  # the suite is the embedded Kubernetes' own
    staging = "v0." + embedded.split(".", 1)[1]
    assert RECIPES["kubernetes-e2e"].source.version == f"v{embedded}"
    assert RECIPES["kubernetes-e2e"].source.staging_version == staging
    assert RECIPES["registry"].source.module == "github.com/distribution/distribution/v3"
    assert RECIPES["sample-apiserver"].source.version == staging
    assert RECIPES["etcd"].version == "3.7.0"  # registry.k8s.io/etcd:3.7.0-0 in 1.37.2's manifest
    assert RECIPES["kubernetes-e2e"].version == main["kubernetes"].version


def test_coredns_is_the_main_recipe_not_a_copy():
    assert (CONFORMANCE / "coredns.toml").is_symlink()
    assert (CONFORMANCE / "coredns.toml").resolve() == (REPO / "recipes" / "coredns.toml").resolve()
    assert sorted(LOCK.gosum("coredns")) == sorted(Lockfile.load(REPO / "recipes" / "recipes.lock").gosum("coredns"))


def test_pause_is_the_main_recipe_and_spec_not_a_copy():
    assert (CONFORMANCE / "pause.toml").is_symlink() and (CONFORMANCE / "images" / "pause.toml").is_symlink()
    assert (CONFORMANCE / "pause.toml").resolve() == (REPO / "recipes" / "pause.toml").resolve()
    assert (CONFORMANCE / "images" / "pause.toml").resolve() == (REPO / "recipes" / "images" / "pause.toml").resolve()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_pinned(name: str):
    src = RECIPES[name].source
    if isinstance(src, DebianSource):  # busybox: its .dsc, the files it lists and the .debs, by sha256
        from build.debsrc import pinned_urls

        for arch in ("amd64", "arm64"):
            assert pinned_urls(RECIPES[name], arch, LOCK.debian_pins(name)), (name, arch)
        return
    lines = LOCK.gosum(name)
    assert any(line.startswith(f"{src.module} {src.version} h1:") for line in lines), name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_image_is_buildable_from_the_lock(name: str):
    spec = SPECS[name]
    binaries = {b.name for r in RECIPES.values() for b in r.binaries}
    assert {f.binary for f in spec.files} <= binaries
    for sf in spec.source_files:
        assert sf.component in RECIPES
    if spec.debian is not None:
        pins = LOCK.debian_pins(spec.lock_key)
        for arch in ("amd64", "arm64"):
            assert any(u.endswith(f"_{arch}.deb") for u in pins), f"{name}: no {arch} packages pinned"
        for pkg in spec.debian.packages:
            assert any(f"/{pkg}_" in u for u in pins), f"{name}: {pkg} not in the pinned set"


def test_agnhost_prev_is_a_distinct_image_of_the_same_binary():
    cur, prev = SPECS["agnhost"], SPECS["agnhost-prev"]
    assert [f.binary for f in cur.files] == [f.binary for f in prev.files] == ["agnhost", "coredns"]
    assert dict(prev.labels)["org.opencontainers.image.version"] == "2.55"
    assert dict(cur.labels)["org.opencontainers.image.version"] == "2.66.1"


def test_images_keep_what_the_tests_rely_on():
    assert SPECS["nonroot"].user == "1234"
    [nnp] = SPECS["nonewprivs"].files
    assert nnp.path == "/usr/local/bin/nnp" and nnp.mode == 0o4755 and SPECS["nonewprivs"].cmd == ("nnp",)
    assert SPECS["agnhost"].entrypoint == ("/agnhost",) and SPECS["agnhost"].cmd == ("pause",)
    assert {t.path for t in SPECS["agnhost"].texts} == {"/etc/passwd", "/etc/group"}
    for n in ("kitten", "nautilus"):
        assert SPECS[n].cmd == ("test-webserver",)
        assert {sf.path for sf in SPECS[n].source_files} >= {f"/{n}.jpg", "/data.json"}
    assert "80/tcp" in SPECS["nginx"].exposed_ports
    assert [f.path for f in SPECS["etcd"].files] == ["/usr/local/bin/etcd", "/usr/local/bin/etcdctl"]
