"""``mke install controller|worker [FLAGS]``: run this mke as a service of the host's service
manager (systemd or OpenRC: mke/service/), enabled at boot; ``mke start`` starts it.

The flags are exactly those of ``mke server`` (controller) and ``mke worker`` (worker): each
role's parser is made by that command's own ``add_arguments``, which ``RoleParser`` records,
and the service's command line is made from what was parsed (``service_flags``), so a new
flag of either command is installable with no change here. Paths become absolute. Every
flag is checked as the command itself checks it (its ``check_args``) before anything is
written; the cluster is not asked (the service does that when it starts).

No token on a command line: a token given as an argument or in ``$MKE_TOKEN`` is written to
``<data-dir>/<role>-token`` (0600) and the service gets ``--token-file``; ``mke uninstall``
removes that file. A ``--token-file`` of your own is passed as it is, and left alone.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mke.errors import NotImplementedYet, UsageError

ROLE_HELP = {"controller": "the control plane: mke server and its flags",
             "worker": "a node: mke worker and its flags (a join token is needed)"}


class RoleParser(argparse.ArgumentParser):
    """The parser of one role: it records the arguments its command defines (``service_actions``,
    while ``recording``), and reports a bad command line as one UsageError line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recording = False
        self.service_actions: list[argparse.Action] = []
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if self.recording:
            self.service_actions.append(action)
        return action

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mke.service import ROLES

    roles = p.add_subparsers(dest="role", required=True, parser_class=RoleParser)
    for role, command in ROLES.items():
        rp = roles.add_parser(role, help=ROLE_HELP[role],
                              description=f"Install `mke {command}` as the service mke-{role}, with these flags.")
        assert isinstance(rp, RoleParser)
        rp.recording = True
        importlib.import_module(f"mke.commands.{command}").add_arguments(rp)
        rp.recording = False
        rp.add_argument("--force", action="store_true",
                        help="install even when an mke service is installed here (replacing mke-" + role + ")")
        rp.add_argument("--detached", action="store_true",
                        help="no service manager: `mke start` runs mke in the background, nothing restarts it "
                             "(hosts without systemd or OpenRC; docs/create-cluster.md)")
        rp.set_defaults(service_actions=tuple(rp.service_actions))


def _word(value: object) -> str:
    return str(value.absolute()) if isinstance(value, Path) else str(value)


def service_flags(actions: Sequence[argparse.Action], args: argparse.Namespace) -> list[str]:
    """The flags of ``args`` that differ from their defaults, as ``--flag`` or ``--flag=VALUE``
    (one per value of a repeatable flag; ``=`` keeps a value that starts with ``-`` a value),
    in the order the command defines them. The ``token`` argument is left out: it never goes
    on a command line."""
    out: list[str] = []
    for a in actions:
        if not a.option_strings:
            if a.dest == "token":
                continue
            raise NotImplementedYet(f"mke install cannot pass the argument {a.dest!r} to the service yet")
        value = getattr(args, a.dest, None)
        if value is None or value == a.default:
            continue
        flag = next((o for o in a.option_strings if o.startswith("--")), a.option_strings[0])
        if isinstance(a, argparse.BooleanOptionalAction):
            out.append(flag if value else f"--no-{flag[2:]}")
        elif a.nargs == 0:  # store_true, store_false, store_const; count
            out += [flag] * (value if a.const is None and isinstance(value, int) else 1)
        elif a.nargs in (None, "?"):
            out += [f"{flag}={_word(v)}" for v in (value if isinstance(value, list) else [value])]
        else:
            raise NotImplementedYet(f"mke install cannot pass {flag} (nargs={a.nargs!r}) to the service yet")
    return out


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_words(command: Sequence[str], *paths: Path | None) -> None:
    """What no service file can hold: an argument that is not UTF-8 text; a data dir or token
    file path with a control character (they are recorded in the file's header lines)."""
    for w in command:
        try:
            w.encode()
        except UnicodeEncodeError:
            raise UsageError(f"{w.encode(errors='surrogateescape')!r}: not UTF-8 text; a service file "
                             "cannot hold it") from None
    for p in paths:
        if p is not None and _CONTROL.search(str(p)):
            raise UsageError(f"{str(p)!r}: a path with a control character cannot be recorded in a service file")


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from mke import start
    from mke.node.files import private_dir, write_file_atomic
    from mke.service import ROLES, ServiceSpec, detached, detect, read_record, service_name
    from mke.tokens import decode_token

    role, command = args.role, ROLES[args.role]
    # 1. the command line, checked as the command itself checks it, and the token's role
    check_args = importlib.import_module(f"mke.commands.{command}").check_args
    _checked, token, data_dir = check_args(args)
    if token:
        # malformed or for the other role: refused now; its expiry is for the service to judge
        # (a node that joined before ignores it)
        decode_token(token, role=role, now=dt.datetime.min.replace(tzinfo=dt.UTC))
    elif role == "worker":
        raise UsageError("mke install worker needs a join token (argument, --token-file or $MKE_TOKEN)")
    writes_token = token is not None and args.token_file is None
    if writes_token:
        args.token, args.token_file = None, data_dir / f"{role}-token"
    spec = ServiceSpec(role=role, command=(*start.self_command(), command, *service_flags(args.service_actions, args)),
                       data_dir=data_dir, token_file=args.token_file if writes_token else None)
    check_words(spec.command, spec.data_dir, spec.token_file)
    # 2. the service manager: there, no mke service installed (or --force), and its tools
    init = detached() if args.detached else detect()
    init.check(spec)
    for other in init.installed_roles():
        if args.force:
            continue
        if other == role:
            raise UsageError(f"{service_name(role)} is already installed ({init.service_file(role)}); "
                             "pass --force to replace it")
        raise UsageError(f"{service_name(other)} is already installed ({init.service_file(other)}); a controller "
                         f"runs a worker too with --enable-worker: `mke uninstall {other}` first, or pass --force "
                         f"to install {service_name(role)} next to it")
    init.require_tools()
    # 3. write: the token file, the service file; enable it
    if writes_token:
        assert spec.token_file is not None and token is not None
        private_dir(data_dir)
        write_file_atomic(spec.token_file, token.encode() + b"\n", 0o600)
    path = init.service_file(role)
    replaced = path.exists()
    before = read_record(path, role) if replaced else None
    write_file_atomic(path, init.render(spec).encode(), init.file_mode)
    if before is not None and before.token_file not in (None, args.token_file) and before.token_file.is_file():
        before.token_file.unlink()  # the token file the replaced service had from mke install: no one reads it now
    init.enable(role)
    print(f"installed {spec.name} ({init.name}): {path}, enabled at boot; start it with `mke start {role}`"
          + ("; it replaced the one installed before: restart a running one (mke stop, mke start) to use it"
             if replaced else ""))
    if writes_token:
        print(f"the join token is in {spec.token_file} (0600) until `mke uninstall {role}`")
    return 0
