"""A real terminal for tests: a program run in a private tmux server, driven with
``send-keys`` and read with ``capture-pane``.

Waiting is always polling the screen for an expected text, with a generous upper bound
that only turns a hang into a failure; nothing waits a fixed time.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

#: Upper bound on any wait for the screen; reached only when something is broken.
WAIT_LIMIT = 30.0


class TerminalError(AssertionError):
    """The expected screen content never appeared; the message holds the screen."""


class Tmux:
    """One program in a detached tmux session on a private socket.

    The pane stays after the program exits (``remain-on-exit``) so its last screen can
    be read; the shell running the program prints its exit status last.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        directory: Path,
        env: Mapping[str, str],
        width: int = 160,
        height: int = 50,
        tmux: str = "tmux",
    ) -> None:
        self.tmux = tmux
        self.socket = directory / "tmux.sock"
        self.target = "console"
        shell_command = " ".join(shlex.quote(part) for part in command)
        shell_command = f"{shell_command}; printf '\\n[exited %d]\\n' $?"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        environment.update(env)
        self._env = environment
        self._run(
            "-f", "/dev/null", "new-session", "-d", "-s", self.target,
            "-x", str(width), "-y", str(height), "-c", str(directory), shell_command,
        )  # fmt: skip
        self._run("set-option", "-t", self.target, "remain-on-exit", "on")
        self._run("set-option", "-t", self.target, "history-limit", "50000")

    def _run(self, *args: str) -> str:
        result = subprocess.run(
            [self.tmux, "-S", str(self.socket), *args],
            env=self._env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=WAIT_LIMIT,
        )
        if result.returncode != 0:
            raise TerminalError(f"tmux {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def type(self, text: str) -> None:
        """Type ``text`` literally (no Enter)."""
        self._run("send-keys", "-t", self.target, "-l", text)

    def line(self, text: str) -> None:
        """Type a line and press Enter."""
        self.type(text)
        self.keys("Enter")

    def keys(self, *names: str) -> None:
        """Press keys by tmux name (``Enter``, ``C-c``, ``C-d``, ``Tab``)."""
        self._run("send-keys", "-t", self.target, *names)

    def screen(self) -> str:
        """Everything the pane showed, scroll-back included, wrapped lines joined."""
        return self._run("capture-pane", "-p", "-J", "-S", "-", "-t", self.target)

    def wait_for(self, pattern: str, *, count: int = 1) -> str:
        """Poll until ``pattern`` (a regex) occurs ``count`` times; return the screen."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + WAIT_LIMIT
        while True:
            screen = self.screen()
            if len(regex.findall(screen)) >= count:
                return screen
            if time.monotonic() > deadline:
                raise TerminalError(f"{pattern!r} never appeared on the screen:\n{screen}")
            time.sleep(0.05)

    def program_pid(self) -> int:
        """The pid of the program (the child of the shell that runs it in the pane)."""
        shell = self._run("display-message", "-p", "-t", self.target, "#{pane_pid}").strip()
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        if len(children) != 1:
            raise TerminalError(f"expected one program under the pane's shell, not {children}")
        return int(children[0])

    def wait_exit(self) -> int:
        """Poll until the program has exited; return its exit status.

        The status is printed by the shell that runs the program (see ``__init__``): tmux's
        own ``pane_dead_status`` can lag behind the pane's end.
        """
        screen = self.wait_for(r"\[exited (\d+)\]")
        return int(re.findall(r"\[exited (\d+)\]", screen)[-1])

    def close(self) -> None:
        subprocess.run(
            [self.tmux, "-S", str(self.socket), "kill-server"],
            env=self._env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=WAIT_LIMIT,
        )

    def __enter__(self) -> Tmux:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
