"""build/bundle/payload.py: the payload file (runtime parts first, then binary frames), read back."""

from __future__ import annotations

import hashlib
import io

import pytest

from build.bundle.payload import write_payload_file
from build.errors import BundleError
from mke import payload_format as pf


def test_payload_file_round_trip(dist):
    cache, dm, parts, tmp = dist
    out = tmp / "payload"
    m = write_payload_file(cache, dm, out, runtime=parts, jobs=1)
    p = pf.Payload.open(out)
    assert p.manifest == m
    assert [f.members for f in m.frames] == [("mke-runtime.0",), ("mke-runtime.1",), ("alpha",), ("gamma", "beta")]
    assert [(lib.name, lib.frame, lib.offset, lib.sha256, lib.size) for lib in m.libraries] == [
        (f"mke-runtime.{i}", i, 0, parts[i].sha256, parts[i].size) for i in range(2)]
    for lib in m.libraries:  # each part is the whole of its frame, as the entry requires
        assert m.frames[lib.frame].decoded_size == lib.size
        sink = io.BytesIO()
        p.decode_frame(lib.frame, {lib.name: sink})
        assert hashlib.sha256(sink.getvalue()).hexdigest() == lib.sha256
    for b in m.binaries:
        sink = io.BytesIO()
        p.decode_frame(b.frame, {b.name: sink})
        assert hashlib.sha256(sink.getvalue()).hexdigest() == b.sha256
    # Frames are cached actions: a second payload reuses them byte for byte.
    out2 = tmp / "payload2"
    write_payload_file(cache, dm, out2, runtime=parts, jobs=2)
    assert out.read_bytes() == out2.read_bytes()


def test_corrupt_cache_blob_is_reported(dist):
    cache, dm, parts, tmp = dist
    blob = cache.cas.path(dm.binaries[0]["sha256"])
    blob.chmod(0o644)
    blob.write_bytes(b"not it")
    with pytest.raises(BundleError, match="corrupt"):
        write_payload_file(cache, dm, tmp / "payload", runtime=parts, jobs=1)


def test_fips_go_goes_from_the_dist_manifest_into_the_payload(dist):
    """Issue 17 item 3: the bundle records which --fips-go built the binaries (the runtime's GODEBUG depends on it)."""
    import dataclasses
    import json

    from build.bundle.payload import DistManifest

    cache, dm, parts, tmp = dist
    path = tmp / "fips-manifest.json"
    doc = json.loads(dm.path.read_text()) | {"fips": True}
    for recorded, asked, want in ((None, None, "native"), (None, "boring", "boring"), ("boring", None, "boring"),
                                  ("boring", "boring", "boring"), ("native", None, "native")):
        path.write_text(json.dumps(doc | ({"fips_go": recorded} if recorded else {})))
        fdm = DistManifest.load(path)
        assert fdm.fips_go == recorded and fdm.fips_go_mode(asked) == want
        m = write_payload_file(cache, dataclasses.replace(fdm, fips_go=fdm.fips_go_mode(asked)), tmp / "payload",
                               runtime=parts, jobs=1)
        assert m.fips_go == want and pf.Payload.open(tmp / "payload").manifest.go_fips == want
    path.write_text(json.dumps(doc | {"fips_go": "boring"}))
    with pytest.raises(BundleError, match="built with --fips-go=boring, not --fips-go=native"):
        DistManifest.load(path).fips_go_mode("native")
    for bad in ({"fips_go": "both"}, {"fips": False, "fips_go": "native"}):
        path.write_text(json.dumps(doc | bad))
        with pytest.raises(BundleError, match="fips_go"):
            DistManifest.load(path)
    # a non-FIPS build records nothing and its payload says nothing
    assert dm.fips_go_mode("boring") is None
    plain = write_payload_file(cache, dm, tmp / "plain", runtime=parts, jobs=1)
    assert plain.fips_go is None and "fips_go" not in json.loads(plain.to_json())
