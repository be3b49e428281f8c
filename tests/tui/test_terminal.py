"""One run in a real terminal (tmux): the app starts, draws, takes keys, opens a target and quits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """A private tmux server (its own socket), so nothing else's sessions are touched."""

    def __init__(self) -> None:
        self.socket = f"dmdb-tui-test-{os.getpid()}"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app", check=False).stdout

    def alive(self) -> bool:
        return self("has-session", "-t", "app", check=False).returncode == 0

    def wait(self, what: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.screen()
            if what in text:
                return text
            time.sleep(0.2)
        raise AssertionError(f"{what!r} never appeared; the terminal shows:\n{self.screen()}")


def test_app_in_tmux(study: Path) -> None:
    tmux = Tmux()
    command = f"env TERM=xterm-256color DMDB_TUI_IMAGES=auto {sys.executable} -m dmdb tui {study}"
    tmux("new-session", "-d", "-s", "app", "-x", "140", "-y", "45", command)
    try:
        tmux.wait("Experiments (runs by role)")
        tmux("send-keys", "-t", "app", "2")
        tmux.wait("of 30 targets, sorted by target")
        tmux("send-keys", "-t", "app", "Enter")
        tmux.wait("remove the 10 most helpful")
        tmux.wait("target 0 of e, fit 1")
        tmux("send-keys", "-t", "app", "m")
        tmux.wait("mode bottom")
        tmux("send-keys", "-t", "app", "Escape")
        tmux.wait("of 30 targets, sorted by target")
        tmux("send-keys", "-t", "app", "q")
        end = time.monotonic() + 15
        while tmux.alive() and time.monotonic() < end:
            time.sleep(0.2)
        assert not tmux.alive(), f"q did not quit; the terminal shows:\n{tmux.screen()}"
    finally:
        tmux("kill-server", check=False)


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux `script` is not installed")
def test_pictures_load_on_a_terminal_that_reports_no_size() -> None:
    """A bare pty reports 0 x 0 cells; textual-image's widget then divides by zero on import.
    The TUI's picture module still loads and draws without graphics."""
    code = "import tui.pictures as p; print('drawing=' + p.drawing())"
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        ["script", "-qfc", f"{sys.executable} -c \"{code}\"", "/dev/null"],
        capture_output=True, text=True, timeout=60, cwd=repo,
        env={**os.environ, "TERM": "xterm-256color", "DMDB_TUI_IMAGES": "auto", "COLUMNS": "0", "LINES": "0"},
    )
    assert "drawing=" in out.stdout, out.stdout + out.stderr
    assert "drawing=graphics" not in out.stdout
