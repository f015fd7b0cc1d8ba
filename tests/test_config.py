"""The config files (pop3tap.toml, ~/.config/pop3tap/config.toml) and `pop3tap config`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "project" / "sub").mkdir(parents=True)
    shutil.copytree(ROOT / "captures", tmp_path / "project" / "captures")
    return tmp_path / "project"


def pop3tap(project: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(project.parent / "home")}
    return subprocess.run(
        [PYTHON, "-m", "pop3tap", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        check=False, cwd=cwd or project, env=env,
    )


def user_file(project: Path, text: str) -> Path:
    path = project.parent / "home" / "pop3tap" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_files_set_defaults_and_the_command_line_overrides_them(project: Path) -> None:
    user = user_file(project, 'log-level = "warning"\n[show]\nverb = ["RETR"]\nbodies = true\n')
    (project / "pop3tap.toml").write_text(
        '[record]\nupstream = "127.0.0.1:110"\nlisten = "2110"\n[show]\nstatus = ["-ERR"]\n'
    )
    # From a subdirectory: the nearest pop3tap.toml upwards is the project's.
    shown = pop3tap(project, "config", "record", cwd=project / "sub")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f'upstream = "127.0.0.1:110"  # {project / "pop3tap.toml"}' in lines
    assert f'log-level = "warning"  # {user}' in lines
    assert "grace = 10.0  # default" in lines
    # The files' filters apply (user: RETR, project: -ERR) ...
    both = pop3tap(project, "show", "captures/pipelined.p3cap")
    assert [x.split("] ", 1)[1] for x in both.stdout.splitlines()[1:]] == [
        "RETR 9", "-ERR There's no message 9."]
    # ... and the command line replaces a repeatable option instead of adding to it.
    cli = pop3tap(project, "show", "captures/pipelined.p3cap", "--status", "+OK", "--verb", "STAT")
    assert [x.split("] ", 1)[1] for x in cli.stdout.splitlines()[1:]] == ["STAT", "+OK 3 954"]


def test_project_file_wins_over_the_user_file(project: Path) -> None:
    user_file(project, '[record]\nupstream = "user.example:110"\ngrace = 3\nkeep-secrets = true\n')
    (project / "pop3tap.toml").write_text('[record]\nupstream = "project.example:110"\n')
    lines = pop3tap(project, "config", "record").stdout.splitlines()
    assert any(x.startswith('upstream = "project.example:110"  # ') for x in lines)
    assert any(x.startswith("grace = 3.0  # ") and "home" in x for x in lines)
    assert any(x.startswith("keep-secrets = true  # ") and "home" in x for x in lines)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[record\n", "not valid TOML"),
        ("[record]\nupstrem = 'x:1'\n", "unknown setting 'upstrem' in [record]"),
        ("[recrod]\nupstream = 'x:1'\n", "[recrod] is not a command"),
        ("[record]\nlisten-tls = 'yes'\n", "listen-tls must be true or false"),
        ("[record]\nlog-format = 'xml'\n", "'xml' is not one of auto, json, console"),
        ("[replay]\ntiming = 'sometimes'\n", "timing"),
        ("[record]\nlisten = ['a']\n", "listen must be a string or a number"),
        ("log-file = '/home/u/.bashrc'\n", "log-file is only taken from the user's config"),
        ("[record]\nkeep-secrets = true\n", "keep-secrets is only taken from the user's"),
    ],
)
def test_bad_files_are_one_line_usage_errors(project: Path, text: str, needle: str) -> None:
    (project / "pop3tap.toml").write_text(text)
    for args in (["config"], ["record", "-u", "127.0.0.1:110"], ["replay", "captures"]):
        result = pop3tap(project, *args)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
        assert str(project / "pop3tap.toml") in result.stderr and needle in result.stderr


def test_a_file_others_can_write_is_refused(project: Path) -> None:
    path = project / "pop3tap.toml"
    path.write_text("[record]\nkeep-secrets = true\n")
    os.chmod(path, 0o666)
    result = pop3tap(project, "show", "captures")
    assert result.returncode == 2 and "refused, other users can write it" in result.stderr


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ('[record]\ncaptures = "recorded"\n', ["--no-captures"]),
        ("[record]\nno-captures = true\n", ["-w", "elsewhere"]),
    ],
)
def test_the_command_line_overrides_a_contradicting_file_option(
    project: Path, text: str, flags: list[str]
) -> None:
    (project / "pop3tap.toml").write_text(text)
    # --grace -1 is checked right after the contradiction: its error shows we got past it.
    result = pop3tap(project, "record", "-u", "127.0.0.1:110", *flags, "--grace", "-1")
    assert result.returncode == 2 and "--grace must be" in result.stderr, result.stderr


def test_a_file_that_contradicts_itself_is_still_an_error(project: Path) -> None:
    (project / "pop3tap.toml").write_text('[record]\ncaptures = "recorded"\nno-captures = true\n')
    result = pop3tap(project, "record", "-u", "127.0.0.1:110", "--grace", "-1")
    assert result.returncode == 2 and "contradict each other" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[console]\ninsecure = true\n", "insecure is only taken from the user's"),
        ("[check]\nallow-dele = true\n", "allow-dele is only taken from the user's"),
        ("[console]\nconfirm-quit = true\n", "confirm-quit is only taken from the user's"),
        ("[console]\nscript = \"x\"\n", "script is only taken from the user's"),
        ("[check]\nagainst = \"h:1\"\n", "against is only taken from the user's"),
        ("[record]\nupstream-ca = \"ca.pem\"\n", "upstream-ca is only taken from the user's"),
        ("[replay]\nca-dir = \"ca\"\n", "ca-dir is only taken from the user's"),
    ],
)
def test_a_project_file_cannot_turn_off_what_protects_a_live_mailbox(
    project: Path, text: str, needle: str
) -> None:
    (project / "pop3tap.toml").write_text(text)
    result = pop3tap(project, "config")
    assert result.returncode == 2 and needle in result.stderr, result
    # The user's own file may.
    (project / "pop3tap.toml").unlink()
    user_file(project, text)
    assert pop3tap(project, "config").returncode == 0


def test_config_prints_a_hostile_value_escaped_as_toml(project: Path) -> None:
    hostile = "a\x1b]0;pwned\x07\x9b31m\x7f\nfake = 1:110"
    (project / "pop3tap.toml").write_text(
        '[record]\nupstream = "' + hostile.encode("unicode_escape").decode().replace(
            "\\x", "\\u00") + '"\n'
    )
    shown = pop3tap(project, "config", "record")
    assert shown.returncode == 0, shown.stderr
    assert not any(not c.isprintable() for c in shown.stdout.replace("\n", ""))
    (line,) = [x for x in shown.stdout.splitlines() if x.startswith("upstream = ")]
    assert tomllib.loads(line.split("  # ")[0])["upstream"] == hostile


def test_config_prints_a_hostile_file_path_escaped(project: Path) -> None:
    where = project / "sub" / "evil\x1b]0;pwned\x07"
    where.mkdir()
    (where / "pop3tap.toml").write_text('[record]\nupstream = "x:110"\n')
    shown = pop3tap(project, "config", "record", cwd=where)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert 'upstream = "x:110"  # ' in shown.stdout


def test_a_huge_config_file_is_refused_without_reading_it_all(project: Path) -> None:
    # A pop3tap.toml can be a link to any big file of root's (the owner check allows root).
    path = project / "pop3tap.toml"
    with path.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GiB of NUL bytes that take no disk space
    result = pop3tap(project, "show", "captures")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "larger than 1 MiB" in result.stderr


def test_a_project_file_another_user_owns_is_passed_over(project: Path) -> None:
    """In a shared directory anyone could plant a pop3tap.toml above a user's work: it is
    neither read nor allowed to make the run fail."""
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    planted = project / "pop3tap.toml"
    planted.write_text("[show]\nverb = [\"QUIT\"]\nbogus-key = 1\n")
    os.chown(planted, nobody, -1)
    deeper = project / "deep"
    deeper.mkdir()
    result = pop3tap(project, "config", cwd=deeper)
    assert result.returncode == 0, result.stderr
    assert "QUIT" not in result.stdout and "bogus" not in result.stdout + result.stderr


def test_no_config_env_reads_no_file(project: Path) -> None:
    (project / "pop3tap.toml").write_text("[show]\nbogus-key = 1\n")
    assert pop3tap(project, "show", "--help").returncode == 2
    env_run = subprocess.run(
        [PYTHON, "-m", "pop3tap", "show", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=project,
        env={**os.environ, "POP3TAP_NO_CONFIG": "1", "XDG_CONFIG_HOME": str(project)},
    )
    assert env_run.returncode == 0, env_run.stderr


def test_relative_paths_in_a_file_are_relative_to_that_file(project: Path) -> None:
    """A project's pop3tap.toml means the project's directories from any subdirectory,
    as a .gitignore or a Makefile include does; the user's file means its own directory."""
    (project / "pop3tap.toml").write_text(
        '[show]\nformat = "html"\noutput = "views/out.html"\n'
        '[record]\ncaptures = "recorded"\n'
    )
    (project / "views").mkdir()
    user = user_file(project, '[record]\nupstream-ca = "certs/ca.pem"\nca-dir = "/abs/ca"\n')
    shown = pop3tap(project, "config", "record", cwd=project / "sub")
    lines = shown.stdout.splitlines()
    assert f'captures = "{project / "recorded"}"  # {project / "pop3tap.toml"}' in lines, lines
    assert f'upstream-ca = "{user.parent / "certs" / "ca.pem"}"  # {user}' in lines, lines
    # An absolute path stays as written (and ~ is the home directory, as in a shell).
    assert f'ca-dir = "/abs/ca"  # {user}' in lines, lines
    # And the command really writes there, not below the current directory.
    result = pop3tap(project, "show", "../captures/pipelined.p3cap", cwd=project / "sub")
    assert result.returncode == 0, result.stderr
    assert (project / "views" / "out.html").is_file()
    assert not (project / "sub" / "views").exists()
    (project / "pop3tap.toml").write_text('[record]\ncaptures = "~/recorded"\n')
    shown = pop3tap(project, "config", "record")
    assert f'captures = "{Path.home() / "recorded"}"' in shown.stdout, shown.stdout


def test_the_command_line_beats_a_contradicting_user_file_option(project: Path) -> None:
    """``insecure-upstream = true`` in the user's file, ``--upstream-ca`` on the command line:
    the command line wins, as for ``no-captures`` and ``-w`` (the CA is used, not skipped)."""
    from pop3tap.cli import build_parser, config

    user_file(project, "[record]\ninsecure-upstream = true\n[console]\ninsecure = true\n")
    (project / "ca.pem").write_text("not read here\n")
    # --tls-timeout 0 is checked right after the contradiction: its error shows we got past it.
    result = pop3tap(
        project, "record", "-u", "127.0.0.1:995", "--upstream-ca", "ca.pem", "--tls-timeout", "0"
    )
    assert result.returncode == 2 and "--tls-timeout must be" in result.stderr, result.stderr
    # Both on the command line is still the user's mistake.
    both = pop3tap(
        project, "record", "-u", "127.0.0.1:995", "--upstream-ca", "ca.pem",
        "--insecure-upstream", "--tls-timeout", "0",
    )
    assert both.returncode == 2 and "contradict each other" in both.stderr, both.stderr
    # What the command receives: the file's option is dropped, the command line's kept.
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(project.parent / "home")
    try:
        for arguments, dropped in (
            (["record", "-u", "h:995", "--upstream-ca", "ca.pem"], "insecure_upstream"),
            (["console", "h:995", "--tls", "--upstream-ca", "ca.pem"], "insecure"),
        ):
            parser = build_parser()
            lists = config.apply(parser, arguments)
            args = parser.parse_args(arguments)
            config.finish(args, lists, arguments)
            assert getattr(args, dropped) is False and args.upstream_ca == Path("ca.pem")
    finally:
        if old is None:
            del os.environ["XDG_CONFIG_HOME"]
        else:
            os.environ["XDG_CONFIG_HOME"] = old


@settings(max_examples=60, deadline=None)
@given(
    st.text(alphabet="abcXYZ019._- /", min_size=1, max_size=30).filter(
        lambda t: not t.startswith("/") and t != "-"
    )
)
def test_every_path_option_of_every_command_is_relative_to_its_file(text: str) -> None:
    """The whole class: no option that takes a path reads it against the current directory."""
    from pop3tap.cli import build_parser, config

    where = Path("/some/project/pop3tap.toml")
    parser = build_parser()
    path_options = [
        (command, dest, action)
        for command, sub in config._commands(parser)
        for dest, action in config._options(sub).items()
        if config._takes_path(action)
    ]
    names = {dest for _command, dest, _action in path_options}
    assert {"captures", "log_file", "upstream_ca", "output", "mbox"} <= names
    for _command, dest, action in path_options:
        value = config._check(action, dest, text, where)
        for one in value if isinstance(value, list) else [value]:
            assert Path(one) == where.parent / text, (dest, one)


@pytest.mark.parametrize("pair", __import__("pop3tap.cli.config", fromlist=["x"]).EXCLUSIVE)
@pytest.mark.parametrize("file_side", [0, 1])
def test_the_command_line_wins_every_exclusive_pair(
    project: Path, pair: tuple[str, str], file_side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole class: whichever option of a pair the file sets, the command line's wins."""
    from pop3tap.cli import build_parser, config

    parser = build_parser()
    command = next(
        c for c, sub in config._commands(parser) if set(pair) <= set(config._options(sub))
    )
    options = config._options(dict(config._commands(parser))[command])

    def as_toml(dest: str) -> str:
        flag = options[dest].nargs == 0
        return f"{dest.replace('_', '-')} = {'true' if flag else chr(34) + 'x' + chr(34)}\n"

    def as_argument(dest: str) -> list[str]:
        flag = "--" + dest.replace("_", "-")
        return [flag] if options[dest].nargs == 0 else [flag, "x"]

    in_file, typed = pair[file_side], pair[1 - file_side]
    built_in = options[in_file].default
    user_file(project, f"[{command[0]}]\n{as_toml(in_file)}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(project.parent / "home"))
    monkeypatch.chdir(project)
    extra = {"console": ["h:995", "--tls"], "check": ["a.p3cap"]}.get(command[0], [])
    arguments = [*command, *extra, *as_argument(typed)]
    lists = config.apply(parser, arguments)
    args = parser.parse_args(arguments)
    config.finish(args, lists, arguments)
    assert getattr(args, in_file) == built_in
    assert getattr(args, typed) not in (None, False)
