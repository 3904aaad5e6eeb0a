"""Target platforms (os/arch) and their names in the various ecosystems."""

from __future__ import annotations

import dataclasses

from build.errors import UsageError

# arch -> (uname machine, ELF e_machine, GNU triple prefix)
_ARCHES = {
    "amd64": ("x86_64", 62, "x86_64-linux-gnu"),
    "arm64": ("aarch64", 183, "aarch64-linux-gnu"),
}
SUPPORTED_OS = ("linux",)


@dataclasses.dataclass(frozen=True, kw_only=True, order=True)
class Platform:
    os: str
    arch: str

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """Parse ``linux/amd64`` or a bare arch (``arm64`` means linux/arm64)."""
        os_name, _, arch = text.rpartition("/")
        os_name = os_name or "linux"
        if os_name not in SUPPORTED_OS:
            raise UsageError(f"unknown OS {os_name!r}: choose one of {', '.join(SUPPORTED_OS)}")
        if arch not in _ARCHES:
            raise UsageError(f"unknown arch {arch!r}: choose one of {', '.join(sorted(_ARCHES))}")
        return cls(os=os_name, arch=arch)

    @classmethod
    def host(cls) -> "Platform":
        import platform as _p

        machine = _p.machine()
        for arch, (uname, _, _) in _ARCHES.items():
            if uname == machine:
                return cls(os="linux", arch=arch)
        raise UsageError(f"unsupported host machine {machine!r}; pass --arch amd64|arm64")

    def __str__(self) -> str:
        return f"{self.os}/{self.arch}"

    @property
    def goarch(self) -> str:
        return self.arch

    @property
    def elf_machine(self) -> int:
        return _ARCHES[self.arch][1]

    @property
    def gnu_triple(self) -> str:
        return _ARCHES[self.arch][2]


def supported_arches() -> tuple[str, ...]:
    return tuple(sorted(_ARCHES))
