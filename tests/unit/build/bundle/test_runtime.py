"""build/bundle/runtime.py without downloading anything: the spec, exclusions, wheels, parts."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import pytest

from build.bundle import runtime
from build.cache import OutputFile
from build.errors import BundleError, RecipeError


def test_the_repositorys_spec_pins_every_package_for_amd64():
    spec = runtime.load_spec()
    debs, wheels = spec.for_arch("amd64")
    assert {d.package for d in debs} == set(spec.packages)
    assert {w.name.lower() for w in wheels} == {r.split("==")[0].lower() for r in spec.requirements}
    assert all(len(p.sha256) == 64 for p in (*debs, *wheels))
    with pytest.raises(BundleError, match="python -m build.bundle.pins --arch arm64"):
        spec.for_arch("arm64")


def test_render_pins_round_trips(tmp_path):
    spec = runtime.load_spec()
    head = spec.path.read_text().split("\n[[deb]]", 1)[0]
    copy = tmp_path / "python.toml"
    copy.write_text(head + "\n" + runtime.render_pins(list(spec.debs), list(spec.wheels)))
    again = runtime.load_spec(copy)
    assert (again.debs, again.wheels) == (spec.debs, spec.wheels)


@pytest.mark.parametrize("change,field", [
    (("schema = 1", "schema = 2"), "schema"),
    (('python = "3.11"', 'python = "3.12"'), "python"),
    (('sha256 = "', 'sha256 = "x'), "deb[0].sha256"),
    (("[pypi]", "[pypi]\nextra = 1"), "pypi.extra"),
    (('"cffi==2.1.1"', '"cffi>=2"'), "pypi.requirements[1]"),
    (("http://deb.debian.org/debian bookworm\"", "bookworm\""), "debian.sources[0]"),
])
def test_bad_spec_names_the_field(tmp_path, change, field):
    text = runtime.DEFAULT_SPEC.read_text().replace(*change, 1)
    bad = tmp_path / "python.toml"
    bad.write_text(text)
    with pytest.raises(RecipeError) as e:
        runtime.load_spec(bad)
    assert str(e.value).startswith(f"{bad}: {field}:")


def test_excluded_names():
    for rel in ("tkinter/__init__.py", "unittest/case.py", "lib-dynload/_curses.cpython-311-x86_64-linux-gnu.so",
                "xml/dom/minidom.py", "sitecustomize.py", "site-packages/x.py", "bz2.py", "LICENSE.txt"):
        assert runtime._excluded(rel), rel
    for rel in ("os.py", "json/__init__.py", "xml/etree/ElementTree.py", "lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
                "encodings/utf_8.py", "email/message.py", "lzma.py", "lib-dynload/_lzma.cpython-311-x86_64-linux-gnu.so",
                "sqlite3/__init__.py", "lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so"):  # mke backup (kine)
        assert not runtime._excluded(rel), rel


def test_unpack_wheel_skips_what_the_runtime_does_not_use(tmp_path):
    wheel = tmp_path / "pyyaml-6.0.3-cp311-cp311-manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in ("yaml/__init__.py", "yaml/_yaml.cpython-311-x86_64-linux-gnu.so", "yaml/cyaml.py",
                     "_yaml/__init__.py", "PyYAML-6.0.3.dist-info/METADATA", "PyYAML-6.0.3.dist-info/RECORD"):
            z.writestr(name, b"x")
    names = runtime._unpack_wheel(wheel, tmp_path / "site")
    assert sorted(names) == ["PyYAML-6.0.3.dist-info/METADATA", "yaml/__init__.py"]
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("bad-1.0.data/scripts/run", b"#!/bin/sh")
    with pytest.raises(BundleError, match="not a plain purelib/platlib file"):
        runtime._unpack_wheel(bad, tmp_path / "site2")


def test_split_parts_is_contiguous_and_balanced(tmp_path):
    sizes = {"bin/mke": 200, "bin/python3.11": 700, "lib/a.so": 500, "lib/b.so": 100, "lib/python3.11/x.pyc": 300,
             "lib/python3.11/y.pyc": 300, "lib/python3.11/z.pyc": 300}
    for name, size in sizes.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * size)
    parts = runtime.split_parts(tmp_path, parts=3)
    assert [n for part in parts for n in part] == sorted(sizes)  # every file once, in name order
    assert max(sum(sizes[n] for n in part) for part in parts) == 900  # the best a contiguous split can do
    assert runtime.split_parts(tmp_path, parts=1) == [sorted(sizes)]


def test_write_part_is_deterministic_and_holds_only_regular_files(tmp_path):
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "python3.11").write_bytes(b"\x7fELF")
    (tree / "bin" / "python3.11").chmod(0o700)
    (tree / "lib").mkdir()
    (tree / "lib" / ("long-" * 30 + ".pyc")).write_bytes(b"code")
    names = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    runtime.write_part(tree, names, tmp_path / "a.tar", 1700000000)
    (tree / "bin" / "python3.11").touch()
    runtime.write_part(tree, names, tmp_path / "b.tar", 1700000000)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == names
    assert all(m.isreg() and m.uid == 0 and m.mtime == 1700000000 for m in members)
    assert [oct(m.mode) for m in members] == ["0o755", "0o644"]


def test_runtime_id_is_what_the_entry_computes():
    """build/entry/payload.go: sha256("mke-runtime 1\\n" + "<name> <sha256> <size>\\n" per part)."""
    parts = (OutputFile(name="mke-runtime.0.tar", sha256="a" * 64, size=10, executable=False),
             OutputFile(name="mke-runtime.1.tar", sha256="b" * 64, size=20, executable=False))
    want = hashlib.sha256(b"mke-runtime 1\n" + f"mke-runtime.0 {'a' * 64} 10\n".encode()
                          + f"mke-runtime.1 {'b' * 64} 20\n".encode()).hexdigest()
    assert runtime.digest_of_parts(parts) == want
    source = (runtime.REPO / "build" / "entry" / "payload.go").read_text()
    assert '"mke-runtime 1\\n"' in source and '"%s %s %d\\n", lib.Name, lib.SHA256, lib.Size' in source
    assert f'runtimePrefix  = "{runtime.PART_PREFIX}"' in source


def test_tar_members_survive_pax_long_names(tmp_path):
    buf = io.BytesIO()
    tree = tmp_path / "t"
    name = "lib/python3.11/site-packages/" + "very_long_directory_name/" * 6 + "module.pyc"
    (tree / name).parent.mkdir(parents=True)
    (tree / name).write_bytes(b"x")
    runtime.write_part(tree, [name], tmp_path / "p.tar", 0)
    buf.write((tmp_path / "p.tar").read_bytes())
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert tar.getnames() == [name]


def test_zip_modules_keeps_extension_packages_as_directories(tmp_path):
    tree = tmp_path / "tree"
    files = {"lib/python3.11/os.pyc": b"os", "lib/python3.11/json/__init__.pyc": b"json",
             "lib/python3.11/email/architecture.rst": b"doc", "lib/python3.11/lib-dynload/_ssl.so": b"\x7fELF",
             "lib/python3.11/site-packages/mke/__init__.pyc": b"mke", "lib/python3.11/site-packages/yaml/x.pyc": b"y",
             "lib/python3.11/site-packages/mke-0.1.dist-info/METADATA": b"meta",
             "lib/python3.11/site-packages/zstandard/__init__.pyc": b"z",
             "lib/python3.11/site-packages/zstandard/backend_c.cpython-311-x86_64-linux-gnu.so": b"\x7fELF",
             "lib/python3.11/site-packages/_cffi_backend.cpython-311-x86_64-linux-gnu.so": b"\x7fELF"}
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    runtime.zip_modules(tree)
    left = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    assert left == ["lib/python3.11/email/architecture.rst", "lib/python3.11/lib-dynload/_ssl.so",
                    "lib/python3.11/site-packages.zip",
                    "lib/python3.11/site-packages/_cffi_backend.cpython-311-x86_64-linux-gnu.so",
                    "lib/python3.11/site-packages/zstandard/__init__.pyc",
                    "lib/python3.11/site-packages/zstandard/backend_c.cpython-311-x86_64-linux-gnu.so",
                    "lib/python311.zip"]
    with zipfile.ZipFile(tree / "lib/python311.zip") as z:
        assert z.namelist() == ["json/__init__.pyc", "os.pyc"]
        assert all(i.compress_type == zipfile.ZIP_STORED and i.date_time == (1980, 1, 1, 0, 0, 0) for i in z.infolist())
    with zipfile.ZipFile(tree / "lib/python3.11/site-packages.zip") as z:
        assert z.namelist() == ["mke-0.1.dist-info/METADATA", "mke/__init__.pyc", "yaml/x.pyc"]
