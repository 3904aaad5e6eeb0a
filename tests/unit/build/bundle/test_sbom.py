"""build/bundle/sbom.py: components, the runtime's Python and Debian packages, the FIPS provider."""

from __future__ import annotations

import json

import pytest

from build.bundle.payload import write_payload_file
from build.bundle.sbom import sbom

RUNTIME = {
    "python": "3.11.2", "python_deb": "3.11.2-6+deb12u9",
    "debs": [{"package": "libc6", "version": "2.36-9+deb12u14", "arch": "amd64", "sha256": "aa" * 32,
              "url": "http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb"}],
    "wheels": [{"name": "cryptography", "version": "48.0.0", "arch": "amd64", "sha256": "bb" * 32,
                "url": "https://files.pythonhosted.org/packages/x/cryptography-48.0.0-cp311-abi3-manylinux_2_34_x86_64.whl"},
               {"name": "PyYAML", "version": "6.0.3", "arch": "amd64", "sha256": "cc" * 32,
                "url": "https://files.pythonhosted.org/packages/y/pyyaml.whl"}],
}


def test_sbom_lists_every_component_and_the_runtime(dist):
    cache, dm, parts, tmp = dist
    m = write_payload_file(cache, dm, tmp / "payload", runtime=parts, jobs=1)
    doc = sbom(m, artifact="mke-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1700000000, runtime=RUNTIME)
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    names = {p["name"]: p for p in doc["packages"]}
    assert {"mke", "alpha", "beta", "gamma", "cpython", "libc6", "cryptography", "PyYAML"} <= set(names)
    assert names["alpha"]["licenseDeclared"] == "MIT" and names["alpha"]["versionInfo"] == "1.0"
    assert names["libc6"]["versionInfo"] == "2.36-9+deb12u14"
    assert names["libc6"]["checksums"] == [{"algorithm": "SHA256", "checksumValue": "aa" * 32}]
    assert names["libc6"]["externalRefs"][0]["referenceLocator"].startswith("pkg:deb/debian/libc6@2.36-9+deb12u14")
    assert names["cryptography"]["externalRefs"][0]["referenceLocator"] == "pkg:pypi/cryptography@48.0.0"
    assert names["cpython"]["versionInfo"] == "3.11.2"
    assert {f["fileName"] for f in doc["files"]} == {"./bin/alpha", "./bin/beta", "./bin/gamma"}
    again = sbom(m, artifact="mke-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1700000000, runtime=RUNTIME)
    assert json.dumps(doc, sort_keys=True) == json.dumps(again, sort_keys=True)


@pytest.fixture
def provenance():
    return {"openssl_version": "3.0.20", "validated": False, "fips_so_sha256": "cd" * 32, "configure": ["enable-fips"],
            "url": "http://deb.debian.org/x.tar.gz", "source": "debian",
            "statement": "OpenSSL 3.0.20 FIPS provider; 3.0.20 is NOT a validated version"}


def test_fips_sbom_carries_the_provider_statement(dist, provenance):
    cache, dm, parts, tmp = dist
    m = write_payload_file(cache, dm, tmp / "payload", runtime=parts, jobs=1)
    runtime = {**RUNTIME, "wheels": [dict(RUNTIME["wheels"][0], fips_build=True)]}
    doc = sbom(m, artifact="mke-fips-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1, runtime=runtime,
               fips_provenance=provenance)
    pkgs = {p["name"]: p for p in doc["packages"]}
    assert provenance["statement"] in pkgs["mke"]["comment"] and provenance["statement"] in doc["comment"]
    ossl = pkgs["openssl-fips-provider"]
    assert ossl["versionInfo"] == "3.0.20" and ossl["checksums"][0]["checksumValue"] == "cd" * 32
    assert "validated: false" in ossl["comment"]
    assert "libcrypto.so.3" in pkgs["cryptography"]["sourceInfo"] and "checksums" not in pkgs["cryptography"]
    plain = sbom(m, artifact="mke-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1, runtime=RUNTIME)
    assert "comment" not in plain


def test_fips_sbom_says_what_is_not_claimed(dist):
    """Issue 17: the 3.1.2 provider from the crate is a validated version, with its caveats, in the SBOM."""
    cache, dm, parts, tmp = dist
    m = write_payload_file(cache, dm, tmp / "payload", runtime=parts, jobs=1)
    prov = {"openssl_version": "3.1.2", "validated": True, "certificate": "FIPS 140-3 certificate #4985",
            "url": "https://static.crates.io/crates/openssl-src/openssl-src-300.1.4+3.1.2.crate",
            "source": "crates.io crate openssl-src 300.1.4+3.1.2", "source_sha256": "80" * 32,
            "configure": ["./Configure", "enable-fips"], "statement": "OpenSSL FIPS provider 3.1.2, a validated version",
            "not_claimed": ["the source is not the release tarball", "the libcrypto is outside the boundary"]}
    doc = sbom(m, artifact="mke-fips-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1, runtime=RUNTIME,
               fips_provenance=prov)
    ossl = {p["name"]: p for p in doc["packages"]}["openssl-fips-provider"]
    assert ossl["versionInfo"] == "3.1.2" and ossl["downloadLocation"] == prov["url"]
    assert ossl["sourceInfo"] == (f"crates.io crate openssl-src 300.1.4+3.1.2 (sha256 {'80' * 32}); "
                                  "Configure ./Configure enable-fips")
    assert ossl["comment"] == ("OpenSSL FIPS provider 3.1.2, a validated version; validated: true; not claimed: the "
                               "source is not the release tarball; not claimed: the libcrypto is outside the boundary")


def test_a_patched_component_is_named_in_the_sbom_the_payload_manifest_and_mke_version(dist, capsys, monkeypatch):
    """[[source.patch]] (docs/recipes.md): the manifest's patch notes reach the SBOM's sourceInfo,
    survive the payload manifest's round trip, and `mke version` prints them; an unpatched
    binary's manifest entry has no "patches" key (its bytes read as before the field)."""
    import argparse

    from mke import payload_format as pf
    from mke.commands import version

    cache, dm, parts, tmp = dist
    m = write_payload_file(cache, dm, tmp / "payload", runtime=parts, jobs=1)
    note = f"patches/alpha/0001.patch (sha256 {'ef' * 32}): alpha reloads its key pair"
    m = m._replace(binaries=tuple(b._replace(source="example.com/alpha@v1.0.0", patches=(note,)) if b.name == "alpha"
                                  else b for b in m.binaries))
    doc = sbom(m, artifact="mke-0.1.0-linux-amd64", digest="ab" * 32, source_date_epoch=1, runtime=RUNTIME)
    pkgs = {p["name"]: p for p in doc["packages"]}
    assert pkgs["alpha"]["sourceInfo"] == f"built from source: Go module example.com/alpha@v1.0.0; patched by mke: {note}"
    assert "patched" not in pkgs["beta"].get("sourceInfo", "")
    back = pf.Manifest.from_json(m.to_json())
    assert {b.name: b.patches for b in back.binaries}["alpha"] == (note,)
    entries = {b["name"]: b for b in m.to_document()["binaries"]}
    assert entries["alpha"]["patches"] == [note] and "patches" not in entries["beta"]
    assert {c["component"]: c.get("patches") for c in back.components()}["alpha"] == [note]

    class Running:
        manifest = back

    monkeypatch.setattr(version, "running_payload", lambda: Running)  # as the running executable's payload
    assert version.run(argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert f"alpha is patched by mke: {note}" in out.splitlines()
