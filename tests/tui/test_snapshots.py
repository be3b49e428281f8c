"""Text snapshots of the main screens (tests/tui/snapshots/*.txt): layout regressions show as diffs.

The database is opened by a relative path so the header reads the same on every machine;
timestamps are masked. DMDB_UPDATE_SNAPSHOTS=1 rewrites the files after a deliberate change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from textual.screen import Screen

from tui.app import DmdbApp
from tui.screens import EmbeddingsScreen, LeakageScreen, OverviewScreen, TargetDetailScreen, TargetsScreen
from tui.widgets import FrameTable

from helpers import assert_snapshot, screen_text, wait_for


def has_table(screen: Screen, selector: str) -> bool:
    """The FrameTable shows a table that has been mounted and laid out (an auto-height table is
    0 high until then)."""
    found = screen.query(selector)
    table = found.first(FrameTable).table if found else None
    return table is not None and table.is_mounted and table.size.height > 0


def test_main_screens(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(study.parent)

    async def main() -> None:
        app = DmdbApp(study.name)
        async with app.run_test(size=(120, 40)) as pilot:
            async def settle(cls: type, cond=lambda s: True) -> None:
                await wait_for(pilot, lambda: isinstance(app.screen, cls) and app.screen.is_mounted and cond(app.screen),
                               what=cls.__name__)
                await pilot.pause(0.3)
                # and the footer no longer offers the stop key: it polls the database every 0.5 s, so a
                # call that ended just before the capture could still show "^g Stop" (a flaky snapshot)
                await wait_for(pilot, lambda: app.service.running() is None and not app.check_action("stop", ()),
                               what="no call holding the database")
                await pilot.pause()

            await settle(OverviewScreen, lambda s: has_table(s, "#fits") and has_table(s, "#experiments"))
            assert_snapshot("overview", screen_text(app), study)
            await pilot.press("2")
            await settle(TargetsScreen, lambda s: has_table(s, "#targets"))
            assert_snapshot("targets", screen_text(app), study)
            app.open_target(3)
            await settle(TargetDetailScreen, lambda s: s.ready >= {"info", "cf", "nearest"})
            assert_snapshot("target_detail", screen_text(app), study)
            await pilot.press("escape", "3")
            await settle(LeakageScreen, lambda s: s.pair is not None)
            assert_snapshot("leakage", screen_text(app), study)
            await pilot.press("4")
            await settle(EmbeddingsScreen, lambda s: has_table(s, "#points"))
            assert_snapshot("embeddings", screen_text(app), study)

    asyncio.run(main())
