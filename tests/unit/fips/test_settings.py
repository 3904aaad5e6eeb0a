"""fips/settings.py and fips/runtime.py's bundle options: what a FIPS build changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from build.errors import FipsSettingsError
from fips import runtime, settings
from fips.settings import go_build_settings, load
from mke.fips import policy as mfips

TOOLCHAIN = settings.TOOLCHAIN_FILE


def test_repository_toolchain_loads():
    tc = load()
    assert tc.default_go_mode == "native"
    native = tc.go_mode("native")
    assert dict(native.env) == {"GOFIPS140": "v1.0.0"} and not native.requires_cgo
    boring = tc.go_mode("boring")
    assert dict(boring.env) == {"GOEXPERIMENT": "boringcrypto"} and boring.requires_cgo
    assert "enable-fips" in tc.openssl.configure


def test_runtime_constants_match_toolchain():
    """mke/fips/policy.py (shipped) and fips/toolchain.toml (build) agree on the module and exemptions."""
    tc = load()
    assert tc.go_mode("native").module == mfips.DEFAULT_GO_MODULE
    assert mfips.DEFAULT_GO_MODULE in mfips.GO_MODULES and "validated" in mfips.GO_MODULES[mfips.DEFAULT_GO_MODULE]
    assert dict(tc.exempt) == mfips.EXEMPT


def test_openssl_provider_is_the_validated_version_from_the_crate():
    """3.1.2 (FIPS 140-3 #4985) from the openssl-src crate, its digest pinned with where it came from."""
    tc = load()
    o = tc.openssl
    assert o.version == "3.1.2" and o.certificate == "FIPS 140-3 certificate #4985"
    assert o.crate is not None and (o.crate.name, o.crate.version, o.crate.subdir) == ("openssl-src", "300.1.4+3.1.2",
                                                                                      "openssl")
    assert o.url == "https://static.crates.io/crates/openssl-src/openssl-src-300.1.4+3.1.2.crate"
    assert o.sha256 == "80b6658b21fe1eba923af26cfe9c57a1a075a8190df2cd869a9bcd730093ffa2"
    assert "index.crates.io" in o.sha256_from
    assert o.configure == ("enable-fips",)  # the security policy's Configure line, nothing added
    assert {"3.0.8", "3.0.9", "3.1.2"} <= set(dict(o.validated))


def test_validated_providers_match_the_runtime():
    """mke fips check (shipped) and the build (fips/toolchain.toml) agree on which providers are validated."""
    assert dict(load().openssl.validated) == mfips.OPENSSL_FIPS_PROVIDERS


def test_crate_base_can_be_moved(monkeypatch):
    o = load().openssl
    assert o.download_url({}) == o.url
    assert o.download_url({settings.CRATES_BASE_ENV: "http://mirror.example/crates/"}) == \
        "http://mirror.example/crates/openssl-src/openssl-src-300.1.4+3.1.2.crate"
    assert o.url.startswith("https://static.crates.io/")  # provenance and the cache key keep the canonical URL


@pytest.mark.parametrize(("old", "new", "message"), [
    ('sha256 = "80b6658b21fe1eba923af26cfe9c57a1a075a8190df2cd869a9bcd730093ffa2"', 'sha256 = "80b6658b"',
     r"openssl\.sha256: '80b6658b' is not 64 lowercase hex digits"),
    ('crate = { name', 'url = "https://example.invalid/openssl-3.1.2.tar.gz"\ncrate = { name',
     "openssl: give exactly one of url"),
    ('subdir = "openssl"', 'subdir = "../etc"', r"openssl\.crate\.subdir: '\.\./etc' must be a relative path"),
    ('base = "https://static.crates.io/crates"', 'base = "static.crates.io"', r"openssl\.crate\.base: 'static"),
    ('sha256_from = ', 'sha256_fro = ', r"openssl\.sha256_fro: unknown key \(did you mean 'sha256_from'\?\)"),
])
def test_bad_openssl_source_is_one_line(tmp_path, old, new, message):
    text = TOOLCHAIN.read_text()
    assert old in text
    with pytest.raises(FipsSettingsError, match=message) as e:
        load(_write(tmp_path, text.replace(old, new, 1)))
    assert "\n" not in str(e.value) and "toolchain.toml" in str(e.value)


def test_policy():
    p = load().policy()
    assert p.go_mode == "native" and p.go_module == "v1.0.0" and p.exemption("pause")
    assert load().policy("boring").go_mode == "boring"


def test_unknown_mode():
    from build.errors import UsageError

    with pytest.raises(UsageError, match="--fips-go=fast: choose one of native, boring"):
        load().go_mode("fast")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "toolchain.toml"
    p.write_text(text)
    return p


def test_unknown_key_has_hint(tmp_path):
    bad = TOOLCHAIN.read_text().replace('module = "v1.0.0"', 'modul = "v1.0.0"')
    with pytest.raises(FipsSettingsError, match=r"go\.native\.modul: unknown key \(did you mean 'module'\?\)"):
        load(_write(tmp_path, bad))


def test_enable_fips_required(tmp_path):
    bad = TOOLCHAIN.read_text().replace('configure = ["enable-fips"]', 'configure = ["no-tests"]')
    with pytest.raises(FipsSettingsError, match="openssl.configure: must contain enable-fips"):
        load(_write(tmp_path, bad))


def test_go_build_settings_native_leaves_cgo_alone():
    g = go_build_settings("native")
    assert dict(g.env) == {"GOFIPS140": "v1.0.0"} and g.cgo is None and g.ldflags == ()
    assert g.apply_ldflags("-s -w") == "-s -w"
    assert g.as_key()["mode"] == "native"


def test_go_build_settings_boring_links_statically():
    g = go_build_settings("boring")
    assert g.cgo is True
    assert g.apply_ldflags("-s -w -X a.b=c") == "-s -w -X a.b=c -linkmode=external -extldflags=-static"
    # a recipe that already links externally (runc: static PIE) keeps its choice
    assert g.apply_ldflags("-s -w -linkmode external -extldflags -static-pie") == \
        "-s -w -linkmode external -extldflags -static-pie"


def test_fips_and_non_fips_keys_differ():
    assert go_build_settings("native").as_key() != go_build_settings("boring").as_key()


# ---------------------------------------------------------------------------- runtime additions


def test_runtime_additions(tmp_path):
    files = {n: tmp_path / n for n in ("fips.so", "openssl.cnf", "provenance.json")}
    for p in files.values():
        p.write_text("x")
    files["provenance.json"].write_text(json.dumps({"openssl_version": "3.0.20", "validated": False}))
    wheel = tmp_path / "cryptography-48.0.0-cp311-abi3-linux_x86_64.whl"
    wheel.write_bytes(b"wheel")
    add = runtime.runtime_additions(files, wheel)
    # copied byte for byte into the runtime's fips/ (mke/start.py looks for fips/openssl.cnf)
    assert add.files == tuple((f"{runtime.BUNDLE_DIR}/{n}", files[n]) for n in ("fips.so", "openssl.cnf", "provenance.json"))
    assert runtime.BUNDLE_DIR == "fips" and add.cryptography_wheel == wheel
    assert add.provenance["validated"] is False
    assert set(add.key()) == {"files", "cryptography_wheel"}  # by content: the runtime's key covers them


def test_runtime_additions_need_provider_files(tmp_path):
    from build.errors import BundleError

    with pytest.raises(BundleError, match="lacks fips.so"):
        runtime.runtime_additions({"openssl.cnf": tmp_path, "provenance.json": tmp_path}, tmp_path / "w.whl")


def test_cryptography_linkage_is_detected():
    """Whatever cryptography this environment has, the check reads its extension's DT_NEEDED."""
    ext = runtime._rust_extension()
    if ext is None:
        pytest.skip("no cryptography")
    from cryptography.hazmat.backends.openssl.backend import backend

    linked = runtime.cryptography_links_system_openssl(ext)
    import ssl

    # a wheel that bundles its own OpenSSL reports a version that the system library need not have
    if linked:
        assert backend.openssl_version_text() == ssl.OPENSSL_VERSION


# ---------------------------------------------------------------------------- docker mode's build env


def _docker_env(**kw):
    from build.modes.docker import GoBuildEnv

    base = {"goos": "linux", "goarch": "amd64", "cgo": False, "cc": "x86_64-linux-gnu-gcc", "tags": (), "ldflags": "-s -w",
                "buildmode": "", "extra_env": (("CGO_CFLAGS", "-DX=1"),), "build_date": "2026-09-23T17:07:00Z"}
    return GoBuildEnv(**{**base, **kw})


def test_native_fips_docker_env():
    plain = _docker_env()
    env = go_build_settings("native").apply(plain)
    c = env.container_env()
    assert c["GOFIPS140"] == "v1.0.0" and c["CGO_ENABLED"] == "0" and c["CGO_CFLAGS"] == "-DX=1"
    assert env.fips and env.ldflags == "-s -w"
    assert env.as_key() != plain.as_key()  # FIPS and non-FIPS never share a cache entry


def test_boring_fips_docker_env():
    env = go_build_settings("boring").apply(_docker_env(extra_env=(("GOEXPERIMENT", "loopvar"),)))
    c = env.container_env()
    assert c["GOEXPERIMENT"] == "loopvar,boringcrypto" and c["CGO_ENABLED"] == "1" and c["CC"] == "x86_64-linux-gnu-gcc"
    assert "GOFIPS140" not in c
    assert env.ldflags == "-s -w -linkmode=external -extldflags=-static"
    assert env.tags == ("netgo", "osusergo")  # Go's resolver and user lookup: a static cgo binary has no NSS
    assert go_build_settings("boring").apply(_docker_env(tags=("seccomp", "netgo"))).tags == ("seccomp", "netgo", "osusergo")
    assert go_build_settings("boring").apply(_docker_env()).as_key() != go_build_settings("native").apply(_docker_env()).as_key()
