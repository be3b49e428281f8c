"""Driving the app headless: wait for a condition, read the screen as text, compare snapshots."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Callable

from rich.console import Console
from textual.app import App
from textual.geometry import Region
from textual.pilot import Pilot

SNAPSHOTS = Path(__file__).parent / "snapshots"
LEAK = (5, 57)  # (target, train_idx) with a weight far above the target's others
VERIFIED = (3, 10, "top")  # (target, k, mode) with recorded retraining runs
COMPARED_TARGETS = [0, 1, 2, 4, 6]  # compared_study: fit 1 retrained without their top 3 and top 10
PLANNED_BY_OTHER = 2  # compared_study's fit that planned no retraining


async def wait_for(pilot: Pilot, cond: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    """Let the app run until cond() is true; fail (with the screen's text) after `timeout` seconds."""
    waited = 0.0
    while not cond():
        if waited >= timeout:
            raise AssertionError(f"timed out waiting for {what}; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)
        waited += 0.05


def screen_text(app: App) -> str:
    """The current screen as plain text, rendered the way `App.export_screenshot` does, without styles."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def assert_snapshot(name: str, text: str, db_path: Path) -> None:
    """Compare with tests/tui/snapshots/NAME.txt (paths and timestamps masked).
    DMDB_UPDATE_SNAPSHOTS=1 rewrites the file instead."""
    text = text.replace(str(db_path), "<db>")
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.…]*", "<time>", text)  # also when a narrow column cut it
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("DMDB_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text + "\n")
        if os.environ.get("DMDB_UPDATE_SNAPSHOTS") != "1":
            raise AssertionError(f"wrote the missing snapshot {path}; check it and rerun")
        return
    expected = path.read_text().rstrip("\n")
    assert text == expected, f"screen differs from {path} (DMDB_UPDATE_SNAPSHOTS=1 to accept):\n{text}"


def text_in(app: App, region: Region) -> str:
    """The screen's text inside `region`, its lines joined and runs of spaces collapsed to one."""
    lines = screen_text(app).splitlines()
    return " ".join(" ".join(line[region.x:region.right] for line in lines[region.y:region.bottom]).split())
