"""mke/node/kmod.py: modprobe's lookup (loaded, built in, modules.dep order, compressed
files) on a module tree written by the test. The loading syscall itself is replaced by a
recorder: it needs CAP_SYS_MODULE and a kernel with loadable modules, which this project's
test machines do not have (their kernels are built without CONFIG_MODULES)."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from mke.errors import KernelModuleError
from mke.node import kmod


def tree(tmp_path: Path) -> kmod.ModuleTree:
    root = tmp_path / "lib" / "modules" / "6.1.0"
    (root / "kernel" / "net").mkdir(parents=True)
    (root / "modules.dep").write_text(
        "kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz\n"
        "kernel/net/bridge/bridge.ko.xz: kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz\n"
        "kernel/net/802/stp.ko.xz: kernel/net/llc/llc.ko.xz\n"
        "kernel/net/llc/llc.ko.xz:\n"
        "kernel/net/ipv4/ipip.ko:\n")
    (root / "modules.builtin").write_text("kernel/fs/overlayfs/overlay.ko\n")
    sys_module = tmp_path / "sys" / "module"
    sys_module.mkdir(parents=True)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "filesystems").write_text("nodev\tsysfs\n")
    return kmod.ModuleTree(root=root, sys_module=sys_module, release="6.1.0", proc=tmp_path / "proc")


def test_loaded_and_builtin_modules_need_nothing(tmp_path):
    t = tree(tmp_path)
    (t.sys_module / "nf_conntrack").mkdir()

    def never(path: Path) -> None:
        raise AssertionError(f"loaded {path}")

    assert kmod.ensure("nf_conntrack", tree=t, loader=never) == "loaded"
    assert kmod.ensure("overlay", tree=t, loader=never) == "builtin"


def test_dependencies_load_first_and_loaded_ones_are_skipped(tmp_path):
    t = tree(tmp_path)
    (t.sys_module / "llc").mkdir()  # already there
    loaded: list[str] = []
    assert kmod.ensure("br-netfilter", tree=t, loader=lambda p: loaded.append(p.name)) == "inserted"
    assert loaded == ["stp.ko.xz", "bridge.ko.xz", "br_netfilter.ko.xz"]


def test_missing_module_names_itself_and_the_tree(tmp_path):
    t = tree(tmp_path)
    with pytest.raises(KernelModuleError, match=r"kernel module vxlan is neither loaded, built in, nor in .*6\.1\.0"):
        kmod.ensure("vxlan", tree=t, loader=lambda p: None)


def test_a_refused_load_says_which_module_and_why(tmp_path):
    t = tree(tmp_path)

    def refuse(path: Path) -> None:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(KernelModuleError, match=r"kernel module ipip .* needed for ipip: Operation not permitted "
                                                r"\(mke needs CAP_SYS_MODULE"):
        kmod.ensure("ipip", tree=t, loader=refuse)


def test_compressed_modules_are_decompressed_for_init_module(tmp_path):
    f = tmp_path / "x.ko.xz"
    f.write_bytes(lzma.compress(b"\x7fELF module"))
    assert kmod.decompress(f) == b"\x7fELF module"
