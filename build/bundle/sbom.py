"""The SPDX 2.3 JSON SBOM written next to dist/mke (mke-<version>-<os>-<arch>.spdx.json)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from mke import payload_format as pf


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _spdx_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in text)


def sbom(manifest: pf.Manifest, *, artifact: str, digest: str, source_date_epoch: int, runtime: dict[str, Any],
         fips_provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """An SPDX 2.3 JSON document: mke, each embedded component (version, license, source,
    digest of each binary), and the runtime: CPython, the Python packages (wheels) and the
    Debian packages it is made of (``runtime``: build/bundle/runtime.py's metadata).

    For a FIPS bundle (``fips_provenance``: the OpenSSL FIPS provider's provenance.json) the
    document and the mke package say so, and the provider is a package of its own whose
    comment is the provenance statement (which version, validated or not)."""
    doc_id = uuid.uuid5(uuid.NAMESPACE_URL, f"mke:{artifact}:{digest}")
    comment = f"build mode {manifest.mode}, fips {str(manifest.fips).lower()}, platform {manifest.platform}"
    if manifest.go_fips:
        comment += f", Go FIPS mode {manifest.go_fips} (--fips-go)"
    if fips_provenance is not None:
        comment += f"; FIPS build: runtime crypto through {fips_provenance.get('statement', '(no statement)')}"
    packages: list[dict[str, Any]] = [{
        "SPDXID": "SPDXRef-Package-mke", "name": "mke", "versionInfo": manifest.mke_version,
        "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "licenseConcluded": "Apache-2.0",
        "licenseDeclared": "Apache-2.0", "copyrightText": "NOASSERTION", "primaryPackagePurpose": "APPLICATION",
        "checksums": [{"algorithm": "SHA256", "checksumValue": digest}],
        "comment": comment,
    }]
    files: list[dict[str, Any]] = []
    rels = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
             "relatedSpdxElement": "SPDXRef-Package-mke"}]
    components: dict[str, list[pf.Binary]] = {}
    for b in manifest.binaries:
        components.setdefault(b.component, []).append(b)
    for comp in sorted(components):
        bins = components[comp]
        first = bins[0]
        pid = f"SPDXRef-Package-{_spdx_id(comp)}"
        source = first.source
        pkg: dict[str, Any] = {
            "SPDXID": pid, "name": comp, "versionInfo": first.version, "filesAnalyzed": False,
            "licenseConcluded": first.license or "NOASSERTION", "licenseDeclared": first.license or "NOASSERTION",
            "copyrightText": "NOASSERTION", "homepage": first.homepage or "NOASSERTION",
            "downloadLocation": "NOASSERTION", "primaryPackagePurpose": "APPLICATION",
        }
        urls = source if isinstance(source, list) else []
        if urls:
            pkg["downloadLocation"] = urls[0]
        if isinstance(source, str) and "@" in source:
            module, version = source.rsplit("@", 1)
            pkg["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                    "referenceLocator": f"pkg:golang/{module}@{version}"}]
            pkg["sourceInfo"] = f"built from source: Go module {source}"
            if first.patches:  # mke's [[source.patch]] changes: not the upstream release as published
                pkg["sourceInfo"] += "; patched by mke: " + "; ".join(first.patches)
        elif urls and urls[0].endswith(".dsc"):  # kind = "debian" recipes (build/debsrc.py)
            pkg["sourceInfo"] = "built from Debian source packages: " + " ".join(urls)
        elif urls:
            pkg["sourceInfo"] = "upstream release artifacts: " + " ".join(urls)
        else:
            pkg["sourceInfo"] = "not embedded: looked up on PATH at run time (none mode)"
        packages.append(pkg)
        rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS", "relatedSpdxElement": pid})
        for b in bins:
            if not b.sha256:
                continue
            fid = f"SPDXRef-File-{_spdx_id(b.name)}"
            files.append({"SPDXID": fid, "fileName": f"./bin/{b.name}", "fileTypes": ["BINARY"],
                          "checksums": [{"algorithm": "SHA256", "checksumValue": b.sha256}],
                          "licenseConcluded": b.license or "NOASSERTION", "copyrightText": "NOASSERTION",
                          "comment": f"{b.size} bytes; roles: {', '.join(b.roles)}"})
            rels.append({"spdxElementId": pid, "relationshipType": "CONTAINS", "relatedSpdxElement": fid})
    for w in runtime.get("wheels", []):
        name, version = w["name"], w["version"]
        pid = f"SPDXRef-Package-python-{_spdx_id(name)}"
        pkg = {"SPDXID": pid, "name": name, "versionInfo": version, "downloadLocation": w["url"],
               "filesAnalyzed": False, "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
               "copyrightText": "NOASSERTION", "primaryPackagePurpose": "LIBRARY",
               "checksums": [{"algorithm": "SHA256", "checksumValue": w["sha256"]}],
               "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                 "referenceLocator": f"pkg:pypi/{name.lower()}@{version}"}]}
        if w.get("fips_build"):
            pkg.pop("checksums")
            pkg["downloadLocation"] = "NOASSERTION"
            pkg["sourceInfo"] = ("built from its sdist against the libcrypto.so.3 the runtime carries "
                                 "(fips.runtime.cryptography_wheel)")
        packages.append(pkg)
        rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS", "relatedSpdxElement": pid})
    # The runtime's Debian packages: CPython, its standard library, glibc and the other libraries.
    for d in runtime.get("debs", []):
        pid = f"SPDXRef-Package-deb-{_spdx_id(d['package'])}"
        packages.append({"SPDXID": pid, "name": d["package"], "versionInfo": d["version"], "downloadLocation": d["url"],
                         "filesAnalyzed": False, "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
                         "copyrightText": "NOASSERTION", "primaryPackagePurpose": "LIBRARY",
                         "checksums": [{"algorithm": "SHA256", "checksumValue": d["sha256"]}],
                         "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                           "referenceLocator": f"pkg:deb/debian/{d['package']}@{d['version']}"
                                                               f"?arch={d['arch']}&distro=debian-12"}]})
        rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS", "relatedSpdxElement": pid})
    py = runtime.get("python", "3.11")
    packages.append({"SPDXID": "SPDXRef-Package-python", "name": "cpython", "versionInfo": py,
                     "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "licenseConcluded": "PSF-2.0",
                     "licenseDeclared": "PSF-2.0", "copyrightText": "NOASSERTION", "primaryPackagePurpose": "LIBRARY",
                     "sourceInfo": f"Debian's python3.11 {runtime.get('python_deb', '')} (the runtime's interpreter, "
                                   "run with its own dynamic loader and libraries)"})
    rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS",
                 "relatedSpdxElement": "SPDXRef-Package-python"})
    doc = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT", "name": artifact,
        "documentNamespace": f"https://spdx.org/spdxdocs/{artifact}-{doc_id}",
        "creationInfo": {"created": _iso(source_date_epoch), "creators": [f"Tool: mke-build-{manifest.mke_version}"]},
        "packages": packages, "files": files, "relationships": rels,
    }
    if fips_provenance is not None:
        prov = fips_provenance
        pkg = {"SPDXID": "SPDXRef-Package-openssl-fips-provider", "name": "openssl-fips-provider",
               "versionInfo": str(prov.get("openssl_version") or "NOASSERTION"),
               "downloadLocation": prov.get("url") or "NOASSERTION", "filesAnalyzed": False,
               "licenseConcluded": "Apache-2.0", "licenseDeclared": "Apache-2.0", "copyrightText": "NOASSERTION",
               "homepage": "https://www.openssl.org", "primaryPackagePurpose": "LIBRARY",
               "sourceInfo": f"{prov.get('source', 'NOASSERTION')}"
                             + (f" (sha256 {prov['source_sha256']})" if prov.get("source_sha256") else "")
                             + f"; Configure {' '.join(prov.get('configure', []))}",
               "comment": f"{prov.get('statement', '')}; validated: {str(bool(prov.get('validated'))).lower()}"
                          + "".join(f"; not claimed: {c}" for c in prov.get("not_claimed") or [])}
        if prov.get("fips_so_sha256"):
            pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": prov["fips_so_sha256"]}]
        packages.append(pkg)
        rels.append({"spdxElementId": "SPDXRef-Package-mke", "relationshipType": "CONTAINS",
                     "relatedSpdxElement": pkg["SPDXID"]})
        doc["comment"] = f"FIPS build of mke. {prov.get('statement', '')}"
    return doc
