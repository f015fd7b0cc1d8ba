"""Defaults for every long option from TOML files, and ``pop3tap config`` to see them.

Files, read with the standard library's :mod:`tomllib`, lowest precedence first:

1. ``${XDG_CONFIG_HOME:-~/.config}/pop3tap/config.toml`` (the user's);
2. ``pop3tap.toml`` in the current directory or the nearest parent (the project's).

The command line overrides both, also where it contradicts a file (``--upstream-ca`` on
the command line over ``insecure-upstream = true``: the file's option is dropped). A
relative path in a file (``~`` is the home directory) is relative to the directory holding
that file, so a project's ``pop3tap.toml`` means the same directories from any
subdirectory. Keys are long option names (``log-level`` or ``log_level``): at the top
level they apply to every command that has the option; in a ``[record]``, ``[replay]``,
``[show]``... table to that command only (``[ca.init]`` for ``ca init``). A file is input
like any other: one other users can write is refused, and an unknown key, a wrong type or
a bad value is a one-line error naming the file (exit 2).
A project file may come with a repository from anyone, so it cannot set ``log-file``,
``keylog``, ``keep-secrets``, ``insecure-upstream``, ``insecure`` (console),
``allow-dele`` (check), ``confirm-quit`` (console), ``upstream-ca``, ``ca-dir``, ``script``
(console) or ``against`` (check); a ``pop3tap.toml`` another user owns is passed over.
``POP3TAP_NO_CONFIG=1`` reads no file at all (golden files, the git textconv recipe).
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_OK, CliError, Subparsers, epilog

PROJECT_FILE = "pop3tap.toml"
#: A config file is a few lines; a link to any big file of root's must not be read whole.
MAX_FILE_BYTES = 1 << 20
#: Options no file may set: they are about one run, not a default.
NOT_CONFIGURABLE = frozenset({"help", "version", "force"})
#: Options a project file may not set: it may come with a repository from anyone, and
#: these write files where it says, weaken what protects secrets (certificate checks
#: included) or let a session delete mail on a live server.
USER_ONLY = frozenset({
    "log_file", "keylog", "keep_secrets", "insecure_upstream", "insecure", "allow_dele",
    "confirm_quit",
    # Whom to trust and what to run with the user's password: a CA the project chose could
    # vouch for a server in the middle; a console script or a check target would act on a
    # real mailbox with the user's credentials.
    "upstream_ca", "ca_dir", "script", "against",
})
#: Set to 1 to read no config file at all (golden files, git textconv, scripts).
NO_CONFIG_ENV = "POP3TAP_NO_CONFIG"
#: Namespace attribute holding the values the files gave, so a command can let the command
#: line win over a file's option that contradicts it (``-w DIR`` over ``no-captures = true``).
FROM_FILES = "_pop3tap_from_files"
#: Namespace attribute holding pop3tap's own defaults of the options the files gave.
BUILT_IN = "_pop3tap_built_in_defaults"
#: Options that exclude each other. When a file gives one and the command line the other,
#: the command line wins and the file's is reset to pop3tap's default; both from the
#: command line (or both from files) stay the command's one-line error.
EXCLUSIVE = (
    ("captures", "no_captures"),
    ("insecure_upstream", "upstream_ca"),
    ("insecure", "upstream_ca"),
)
#: Metavars of options that take a file or directory path but no ``type=Path``.
PATH_METAVARS = frozenset({"PATH", "FILE", "DIR", "DIR|MBOX"})


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pop3tap" / "config.toml"


def project_config_path(cwd: Path | None = None) -> Path | None:
    """The nearest ``pop3tap.toml`` from ``cwd`` up to the filesystem root that is the
    user's (or root's).

    One that another user owns is passed over: in a directory others share (``/tmp``)
    anyone could plant one, to set options or to make every run below it fail.
    """
    here = (cwd or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / PROJECT_FILE
        try:
            info = candidate.stat()
        except OSError:
            continue
        if candidate.is_file() and info.st_uid in (os.getuid(), 0):
            return candidate
    return None


@dataclass
class Settings:
    """Loaded files: values per command path (``("record",)``, ``("ca", "init")``)."""

    files: list[Path] = field(default_factory=list)
    searched: list[Path] = field(default_factory=list)
    #: command path -> dest -> (value, file)
    values: dict[tuple[str, ...], dict[str, tuple[Any, Path]]] = field(default_factory=dict)


def _read(path: Path) -> dict[str, Any]:
    # Checked on the open file, so it cannot be swapped between the check and the read.
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CliError(f"config file {path}: cannot read it: {exc.strerror}") from None
    with handle:
        info = os.fstat(handle.fileno())
        if info.st_uid not in (os.getuid(), 0) or info.st_mode & 0o022:
            raise CliError(
                f"config file {path}: refused, other users can write it (chmod go-w, or remove it)"
            )
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise CliError(f"config file {path}: cannot read it: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CliError(f"config file {path}: refused, larger than 1 MiB")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"config file {path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"config file {path}: cannot read it: {exc}") from None


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], argparse.ArgumentParser]
]:
    """Every (sub)command that takes options, as a path and its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))
            return
    if prefix:
        yield prefix, parser


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The long options of one command by dest."""
    return {
        a.dest: a
        for a in parser._actions
        if a.option_strings
        and a.dest not in NOT_CONFIGURABLE
        and any(o.startswith("--") for o in a.option_strings)
    }


def _check(action: argparse.Action, key: str, value: Any, path: Path) -> Any:
    """The value as the option takes it; raises a one-line :class:`CliError`."""
    where = f"config file {path}: {key}"
    flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
    if flag or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise CliError(f"{where} must be true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        values = value if isinstance(value, list) else [value]
        return [_check_one(action, where, v, path.parent) for v in values]
    return _check_one(action, where, value, path.parent)


def _takes_path(action: argparse.Action) -> bool:
    return action.type is Path or action.metavar in PATH_METAVARS


def _check_one(action: argparse.Action, where: str, value: Any, base: Path) -> Any:
    """``base`` is the file's directory: a relative path is relative to it, not to
    wherever the command happens to run."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CliError(f"{where} must be a string or a number")
    text = str(value)
    if _takes_path(action) and text not in ("", "-"):
        path = Path(text).expanduser() if text.startswith("~") else Path(text)
        text = str(path if path.is_absolute() else base / path)
    if action.type is not None and callable(action.type):
        try:
            converted = action.type(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise CliError(f"{where}: {exc or 'invalid value'} ({text!r})") from None
    else:
        converted = text
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise CliError(f"{where}: {text!r} is not one of {choices}")
    return converted


def load(parser: argparse.ArgumentParser, cwd: Path | None = None) -> Settings:
    """Read the files and check every key against the parser."""
    settings = Settings()
    commands = dict(_commands(parser))
    user, project = user_config_path(), project_config_path(cwd)
    settings.searched = [user, project or (cwd or Path.cwd()) / PROJECT_FILE]
    for path in (user, project):
        if path is None or not path.is_file():
            continue
        settings.files.append(path)
        _apply_table(settings, commands, _read(path), (), path, project=path is project)
    return settings


def _apply_table(
    settings: Settings,
    commands: dict[tuple[str, ...], argparse.ArgumentParser],
    table: dict[str, Any],
    prefix: tuple[str, ...],
    path: Path,
    *,
    project: bool,
) -> None:
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if project and key in USER_ONLY:
            raise CliError(
                f"config file {path}: {raw_key} is only taken from the user's config.toml or "
                "the command line (a project file may come from anyone)"
            )
        nested = (*prefix, raw_key)
        if isinstance(value, dict):
            if not any(c[: len(nested)] == nested for c in commands):
                raise CliError(f"config file {path}: [{'.'.join(nested)}] is not a command")
            _apply_table(settings, commands, value, nested, path, project=project)
            continue
        targets = [
            c for c in commands if c[: len(prefix)] == prefix and key in _options(commands[c])
        ]
        if prefix and prefix in commands and key not in _options(commands[prefix]):
            targets = []
        if not targets:
            where = f"[{'.'.join(prefix)}]" if prefix else "the top level"
            raise CliError(f"config file {path}: unknown setting {raw_key!r} in {where}")
        for command in targets:
            action = _options(commands[command])[key]
            checked = _check(action, raw_key, value, path)
            settings.values.setdefault(command, {})[key] = (checked, path)


def command_path(parser: argparse.ArgumentParser, arguments: list[str]) -> tuple[str, ...]:
    """The (sub)command the arguments name, e.g. ``("ca", "init")``; () if none."""
    path: tuple[str, ...] = ()
    current = parser
    for arg in arguments:
        sub = next(
            (a for a in current._actions if isinstance(a, argparse._SubParsersAction)), None
        )
        if sub is None:
            break
        if arg in sub.choices:
            path = (*path, arg)
            current = sub.choices[arg]
    return path


def apply(parser: argparse.ArgumentParser, arguments: list[str]) -> dict[str, list[Any]]:
    """Make the files' values the defaults of the command about to run.

    Returns the values of repeatable options (``show --verb``...), which :func:`finish`
    applies after parsing only when the command line gave none (argparse would add the
    command line's to a list default instead of replacing it).
    """
    path = command_path(parser, arguments)
    if not path or path == ("config",) or os.environ.get(NO_CONFIG_ENV) == "1":
        return {}
    settings = load(parser)
    values = settings.values.get(path)
    if not values:
        return {}
    commands = dict(_commands(parser))
    options = _options(commands[path])
    lists = {
        dest: value
        for dest, (value, _f) in values.items()
        if isinstance(options[dest], argparse._AppendAction)
    }
    commands[path].set_defaults(
        **{dest: value for dest, (value, _f) in values.items() if dest not in lists},
        **{FROM_FILES: {dest: value for dest, (value, _f) in values.items()}},
        **{BUILT_IN: {dest: options[dest].default for dest in values}},
    )
    return lists


def from_files(args: argparse.Namespace, dest: str) -> bool:
    """Whether the option still holds the value a config file gave it (not the command line's)."""
    values: dict[str, Any] = getattr(args, FROM_FILES, {})
    return dest in values and getattr(args, dest, None) == values[dest]


def finish(args: argparse.Namespace, lists: dict[str, list[Any]], arguments: list[str]) -> None:
    """Repeatable options from the files, where the command line gave none; and the
    command line's option where a file's contradicts it (:data:`EXCLUSIVE`)."""
    for dest, values in lists.items():
        if not getattr(args, dest, None):
            setattr(args, dest, list(values))
    files: dict[str, Any] = getattr(args, FROM_FILES, {})
    clashes = [
        pair for pair in EXCLUSIVE
        if all(_given(args, dest) for dest in pair) and any(dest in files for dest in pair)
    ]
    if not clashes:
        return
    typed = _from_command_line(arguments, {dest for pair in clashes for dest in pair})
    built_in: dict[str, Any] = getattr(args, BUILT_IN, {})
    for first, second in clashes:
        if (first in typed) != (second in typed):
            dropped = second if first in typed else first
            setattr(args, dropped, built_in.get(dropped))


def _given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the option is set: a flag that is on, a value that is not None."""
    value = getattr(args, dest, None)
    return value is not None and value is not False


def _from_command_line(arguments: list[str], dests: set[str]) -> set[str]:
    """Which of ``dests`` the command line itself gave (a file's value can equal it).

    The arguments are parsed again by a fresh parser whose defaults for ``dests`` are a
    marker no option can produce; they parsed once already, so this cannot fail.
    """
    from pop3tap.cli import build_parser

    parser = build_parser()
    command = dict(_commands(parser))[command_path(parser, arguments)]
    unset = object()
    for action in command._actions:
        if action.dest in dests:
            action.default = unset
    parsed = parser.parse_args(arguments)
    return {dest for dest in dests if getattr(parsed, dest, unset) is not unset}


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "config",
        help="print the effective settings and where each comes from",
        description="Print every command's long options with their effective default and "
        "where it comes from: pop3tap's default, the user's config.toml or the "
        "project's pop3tap.toml. The command line overrides all of them.",
        epilog=epilog(
            "  pop3tap config                      every command\n"
            "  pop3tap config record               one command\n"
            "\n"
            "  # pop3tap.toml\n"
            "  log-level = \"debug\"                 every command with --log-level\n"
            "  [record]\n"
            "  upstream = \"pop.example.com:110\"\n"
            "  listen = \"127.0.0.1:2110\""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="*", metavar="COMMAND", help="only this command")
    parser.set_defaults(handler=_cmd_config)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + "".join(_toml_char(ch) for ch in str(value)) + '"'


def _toml_char(ch: str) -> str:
    """One character of a TOML basic string (TOML 1.0, "String"): a file's terminal
    escapes, newlines and anything else not printable become ``\\uXXXX`` escapes."""
    if ch in '"\\':
        return "\\" + ch
    if ch.isprintable():
        return ch
    return f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}"


def _cmd_config(args: argparse.Namespace) -> int:
    from pop3tap.cli import build_parser

    parser = build_parser()
    settings = load(parser)
    commands = dict(_commands(parser))
    wanted = tuple(args.command)
    if wanted and wanted not in commands:
        raise CliError(f"config: no command {' '.join(wanted)!r}")
    for path in settings.searched:
        state = "read" if path in settings.files else "not found"
        print(f"# {printable(str(path))}: {state}")  # a path may hold terminal escapes
    for command, sub in commands.items():
        if (wanted and command != wanted) or command == ("config",):
            continue
        options = _options(sub)
        if not options:
            continue
        print(f"\n[{'.'.join(command)}]")
        chosen = settings.values.get(command, {})
        for dest, action in sorted(options.items()):
            if dest in chosen:
                value, source = chosen[dest]
                where = printable(str(source))
            else:
                value, where = action.default, "default"
            name = dest.replace("_", "-")
            shown = "(none)" if value is None else _toml_value(value)
            print(f"{name} = {shown}  # {where}")
    return EXIT_OK
