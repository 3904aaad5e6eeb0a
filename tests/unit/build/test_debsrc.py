"""build/debsrc.py: .dsc parsing, pins, safe unpacking, .deb sysroots, the container script."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from build.debsrc import (
    DebianBuildEnv,
    container_script,
    parse_dsc,
    pinned_urls,
    prepare_inputs,
    read_series,
    unpack_deb,
)
from build.download import Downloader
from build.errors import DebianSourceError, LockfileError
from build.lockfile import Lockfile
from build.recipes import DebianSource, load_recipe, load_recipes
from tests.support.debpkg import _ar, _tar, lock_pins, make_packages, recipe_text

REPO = Path(__file__).resolve().parents[3]
GOOD = REPO / "tests" / "recipes" / "good" / "debsrc.toml"

DSC = """-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Format: 3.0 (quilt)
Source: iptables
Version: 1.8.9-2
Checksums-Sha256:
 {a} 637848 iptables_1.8.9.orig.tar.xz
 {b} 25172 iptables_1.8.9-2.debian.tar.xz
Files:
 0123 637848 iptables_1.8.9.orig.tar.xz

-----BEGIN PGP SIGNATURE-----
xyz
-----END PGP SIGNATURE-----
"""


def test_parse_dsc_reads_checksums_and_ignores_the_signature() -> None:
    d = parse_dsc(DSC.format(a="a" * 64, b="b" * 64), where="x.dsc")
    assert (d.source, d.version, d.format) == ("iptables", "1.8.9-2", "3.0 (quilt)")
    assert [(f.name, f.size, f.sha256[0]) for f in d.files] == [
        ("iptables_1.8.9.orig.tar.xz", 637848, "a"), ("iptables_1.8.9-2.debian.tar.xz", 25172, "b")]
    assert d.orig.name.endswith(".orig.tar.xz") and d.debian.name.endswith(".debian.tar.xz")
    url = "https://deb.debian.org/debian/pool/main/u/util-linux/util-linux_2.38.1-5%2bdeb12u3.dsc"
    from build.debsrc import DscFile
    assert d.file_url(url, DscFile(name="util-linux_2.38.1-5+deb12u3.debian.tar.xz", size=1, sha256="c" * 64)) == \
        "https://deb.debian.org/debian/pool/main/u/util-linux/util-linux_2.38.1-5%2bdeb12u3.debian.tar.xz"


@pytest.mark.parametrize("text, message", [
    ("Source: x\nVersion: 1\nFormat: 3.0 (quilt)\n", "no Checksums-Sha256 field"),
    ("Source: x\nVersion: 1\nFormat: 1.0\nChecksums-Sha256:\n", "source format '1.0' is not supported"),
    ("Source: x\nVersion: 1\nFormat: 3.0 (quilt)\nChecksums-Sha256:\n nothex 1 f.tar.xz\n", "bad Checksums-Sha256 line"),
    ("Source: x\nVersion: 1\nFormat: 3.0 (quilt)\nChecksums-Sha256:\n " + "a" * 64 + " 1 ../f.tar.xz\n", "bad Checksums-Sha256 line"),
])
def test_parse_dsc_rejects(text: str, message: str) -> None:
    with pytest.raises(DebianSourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_dsc(text, where="x.dsc")


def test_pinned_urls_need_every_file(tmp_path: Path) -> None:
    recipe = load_recipe(GOOD)
    dsc = "https://deb.debian.org/debian/pool/main/d/debsrc/debsrc_1.8.9-2%2bdeb12u1.dsc"
    lib = "https://deb.debian.org/debian/pool/main/libb/libbar/libbar_1.0-1.dsc"
    deb = "https://deb.debian.org/debian/pool/main/libf/libfoo/libfoo-dev_1.0.5-3_amd64.deb"
    pins = {dsc: "1" * 64, lib: "2" * 64, deb: "3" * 64}
    with pytest.raises(LockfileError, match="pins no files of libbar 2:1.0-1"):
        pinned_urls(recipe, "amd64", pins)
    pins[lib.replace(".dsc", ".orig.tar.gz").replace("1.0-1", "1.0")] = "4" * 64
    pins[dsc.replace(".dsc", ".debian.tar.xz")] = "5" * 64
    got = pinned_urls(recipe, "amd64", pins)
    assert len(got) == 5 and got[deb] == "3" * 64
    with pytest.raises(LockfileError, match=r"pins no sha256 for .*libfoo-dev_1.0.5-3_arm64.deb"):
        pinned_urls(recipe, "arm64", pins)


def test_good_recipe_fields() -> None:
    r = load_recipe(GOOD)
    src = r.source
    assert isinstance(src, DebianSource)
    assert [p.name for p in src.packages] == ["libbar", "debsrc"] and src.version == "1.8.9-2+deb12u1"
    assert src.packages[0].upstream_version == "1.0" and src.packages[0].install == ("install-exec",)
    assert src.packages[1].install == ("install",) and src.packages[1].make == ("-C", "src")
    assert r.binaries[0].links == ("tool-a", "tool-a-save", "tool.b+c")
    assert r.provided_names == ("multi", "tool-a", "tool-a-save", "tool.b+c", "other")
    assert r.modes() == ("docker", "none")


def test_link_may_not_shadow_another_recipes_binary(tmp_path: Path) -> None:
    (tmp_path / "debsrc.toml").write_text(GOOD.read_text())
    other = (GOOD.read_text().replace('name = "debsrc"\nversion', 'name = "debsrc2"\nversion', 1)
             .replace('"multi"', '"tool-a"').replace('"other"', '"other2"').replace("multi =", "tool-a =")
             .replace("other =", "other2 =").replace('links = ["tool-a", "tool-a-save", "tool.b+c"]', ""))
    (tmp_path / "debsrc2.toml").write_text(other)
    from build.errors import RecipeError
    with pytest.raises(RecipeError, match="binary 'tool-a' is also provided by recipe"):
        load_recipes(tmp_path)


def test_container_script_order_and_quoting() -> None:
    r = load_recipe(GOOD)
    env = DebianBuildEnv(triple="x86_64-linux-gnu", cflags="-Os", ldflags="", extra_env=(("FOO", "bar"),), epoch=315532800)
    script = container_script(r, env)
    lines = script.splitlines()
    assert lines[0] == "set -eu"
    i_lib = next(i for i, x in enumerate(lines) if x.startswith("cp -a /in/src/libbar"))
    i_main = next(i for i, x in enumerate(lines) if x.startswith("cp -a /in/src/debsrc"))
    assert i_lib < i_main  # built in the recipe's order, into one prefix
    assert "make install-exec" in lines and "make -C src" not in lines and "make V=1 -C src" in lines
    assert "./configure --prefix=/prefix --build=x86_64-linux-gnu --host=x86_64-linux-gnu --disable-shared " \
           "--enable-static --disable-dependency-tracking --disable-foo" in lines
    assert lines[-2:] == ["cp -L /prefix/bin/other /out/other", "x86_64-linux-gnu-strip --strip-all /out/other"]
    e = env.container_env()
    assert e["CC"] == "x86_64-linux-gnu-gcc --static" and e["FOO"] == "bar" and e["PKG_CONFIG_PATH"] == ""
    assert e["PKG_CONFIG_LIBDIR"].split(":")[0] == "/prefix/lib/pkgconfig"


def test_unsafe_tarball_is_refused(tmp_path: Path) -> None:
    from build.debsrc import _safe_extract

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("top/../../evil")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "t.tar").write_bytes(buf.getvalue())
    with pytest.raises(DebianSourceError, match="cannot unpack"):
        _safe_extract(tmp_path / "t.tar", tmp_path / "out", strip_top=False, where="t.tar")
    assert not (tmp_path.parent / "evil").exists()


def test_series_with_options_comments_and_missing_patch(tmp_path: Path) -> None:
    p = tmp_path / "debian" / "patches"
    p.mkdir(parents=True)
    (p / "a.patch").write_text("")
    (p / "b.patch").write_text("")
    (p / "series").write_text("# comment\na.patch\nb.patch -p0\n\n")
    assert read_series(tmp_path) == (("a.patch", ("-p1",)), ("b.patch", ("-p0",)))
    (p / "series").write_text("c.patch\n")
    with pytest.raises(DebianSourceError, match="lists c.patch"):
        read_series(tmp_path)
    (p / "series").write_text("../x.patch\n")
    with pytest.raises(DebianSourceError, match="unsafe patch name"):
        read_series(tmp_path)


def test_unpack_deb_rewrites_pkgconfig(tmp_path: Path) -> None:
    data = _tar({"./usr/lib/x86_64-linux-gnu/pkgconfig/m.pc": (b"prefix=/usr\nlibdir=${prefix}/lib\n", 0o644)}, "xz")
    deb = tmp_path / "m.deb"
    deb.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", _tar({}, "xz")), ("data.tar.xz", data)]))
    unpack_deb(deb, tmp_path / "sysroot")
    pc = (tmp_path / "sysroot" / "usr/lib/x86_64-linux-gnu/pkgconfig/m.pc").read_text()
    assert pc.startswith("prefix=/in/sysroot/usr\n")
    (tmp_path / "bad.deb").write_bytes(b"not an ar archive")
    with pytest.raises(DebianSourceError, match="no ar header"):
        unpack_deb(tmp_path / "bad.deb", tmp_path / "s2")


def test_prepare_inputs_from_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole host side against the fixture package, served by a local HTTP server."""
    from tests.support.mirror import MirrorServer

    files = make_packages(tmp_path / "served" / "debian" / "pool")
    with MirrorServer(tmp_path / "served") as server:
        url = f"{server.url}/debian"
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "mkehello.toml").write_text(recipe_text(url))
        recipe = load_recipe(tmp_path / "r" / "mkehello.toml")
        pins = lock_pins(url, files)
        got = prepare_inputs(recipe, "amd64", pins, Downloader(tmp_path / "dl"), tmp_path / "in")
        assert (tmp_path / "in" / "src" / "mkehello" / "configure").is_file()
        assert (tmp_path / "in" / "src" / "mkehello" / "debian" / "patches" / "series").is_file()
        assert (tmp_path / "in" / "sysroot" / "usr" / "include" / "mkegreet.h").is_file()
        assert got.packages[0].patches == (("say-patched.patch", ("-p1",)),)
        # a lock entry that disagrees with the verified .dsc is named
        orig = next(u for u in pins if ".orig." in u)
        pins[orig] = hashlib.sha256(b"other").hexdigest()
        with pytest.raises(DebianSourceError, match="the verified .dsc says"):
            prepare_inputs(recipe, "amd64", pins, Downloader(tmp_path / "dl2"), tmp_path / "in2")


def test_lockfile_debian_section(tmp_path: Path) -> None:
    path = tmp_path / "recipes.lock"
    lock = Lockfile.empty(path).with_debian("ipset", {"https://x/b.dsc": "b" * 64, "https://x/a.dsc": "a" * 64})
    lock.save()
    doc = json.loads(path.read_text())
    assert list(doc["debian"]["ipset"]) == ["https://x/a.dsc", "https://x/b.dsc"]
    assert Lockfile.load(path).debian_pins("ipset") == {"https://x/a.dsc": "a" * 64, "https://x/b.dsc": "b" * 64}
    doc["debian"]["ipset"]["https://x/a.dsc"] = "nothex"
    path.write_text(json.dumps(doc))
    with pytest.raises(LockfileError, match=r"debian.ipset\[https://x/a.dsc\]: not a sha256"):
        Lockfile.load(path)


def test_repository_lock_pins_every_debian_recipe() -> None:
    lock = Lockfile.load(REPO / "recipes" / "recipes.lock")
    for r in load_recipes(REPO / "recipes").values():
        if isinstance(r.source, DebianSource):
            for arch in ("amd64", "arm64"):
                assert pinned_urls(r, arch, lock.debian_pins(r.name)), r.name


def test_closure_parsers_read_apt_output():
    from build.debsrc import install_uris, packages_sha256

    text = ("'https://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_amd64.deb' "
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb 928188 MD5Sum:f6f1b0b4181aead8e1a5b1258f63f501\n")
    assert install_uris(text) == {"busybox-static=1:1.35.0-4+deb12u1+b1":
                                  "https://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_amd64.deb"}
    shown = ("Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nDescription: x\n more\nSHA256: " + "AB" * 32 +
             "\n\nPackage: other\nVersion: 1\n")
    assert packages_sha256(shown) == {"busybox-static=1:1.35.0-4+deb12u1+b1": "ab" * 32}


def test_container_script_for_a_kconfig_build_of_the_upstream_release() -> None:
    """busybox (recipes/conformance/busybox.toml): no Debian patches, make defconfig, the settings
    over it (each checked after oldconfig), make; no ./configure."""
    from build.debsrc import PreparedPackage

    r = load_recipe(Path(__file__).resolve().parents[3] / "recipes" / "conformance" / "busybox.toml")
    env = DebianBuildEnv(triple="x86_64-linux-gnu", cflags="-Os", ldflags="", extra_env=(), epoch=315532800)
    pkg = r.source.packages[0]
    prepared = (PreparedPackage(package=pkg, dsc=None, patches=(("revert-x.patch", ("-p1",)),)),)  # type: ignore[arg-type]
    lines = container_script(r, env, prepared).splitlines()
    assert not [x for x in lines if x.startswith("patch ")]  # debian_patches = false
    assert not [x for x in lines if x.startswith("./configure")]
    i = lines.index("make defconfig")
    assert lines[i + 1] == "sed -i -e '/^CONFIG_STATIC=/d' -e '/^# CONFIG_STATIC is not set/d' .config"
    assert lines[i + 2] == "printf '%s\\n' CONFIG_STATIC=y >> .config"
    assert "yes '' | make oldconfig >/dev/null" in lines
    assert any(x.startswith("grep -qxF CONFIG_STATIC=y .config ||") for x in lines)
    assert any(x.startswith("grep -qxF '# CONFIG_TC is not set' .config ||") for x in lines)
    assert "make V=1 busybox" in lines and "make install CONFIG_PREFIX=/prefix" in lines
