"""The app driven headless with Pilot: every screen shows the numbers dmdb's API gives."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np
import polars as pl
import pytest
from textual import events
from textual.widgets import Input

import dmdb
from dmdb import analyses
from tui.app import DmdbApp
from tui.screens import (
    EmbeddingsScreen,
    HelpScreen,
    LeakageScreen,
    MessageScreen,
    OverviewScreen,
    SqlScreen,
    TargetDetailScreen,
    TargetsScreen,
)
from tui.screens.detail import N_EXAMPLES
from tui.service import DmdbError, Service
from tui.widgets import FrameTable, RowList, round_column

from analyses_fixtures import insert_fit
from helpers import COMPARED_TARGETS, LEAK, PLANNED_BY_OTHER, VERIFIED
from helpers import screen_text, text_in, wait_for

SIZE = (150, 50)


def drive(path: Path | str, script: Callable[[DmdbApp, object], Awaitable[None]], opens: bool = True,
          size: tuple[int, int] = SIZE) -> None:
    """Run the app headless on `path`; with opens, first wait for the overview (the database is open)."""
    async def main() -> None:
        app = DmdbApp(path)
        async with app.run_test(size=size) as pilot:
            if opens:
                await until_screen(pilot, OverviewScreen)
            await script(app, pilot)

    asyncio.run(main())


async def until_screen(pilot, cls: type, **kw) -> None:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, cls), what=cls.__name__, **kw)
    await pilot.pause()  # one refresh, so the screen has been laid out and drawn


async def until_table(pilot, selector: str) -> FrameTable:
    await wait_for(pilot, lambda: pilot.app.screen.query(selector) and pilot.app.screen.query_one(selector, FrameTable).table
                   is not None, what=f"table {selector}")
    return pilot.app.screen.query_one(selector, FrameTable)


async def open_detail(pilot, target: int) -> TargetDetailScreen:
    pilot.app.open_target(target)
    await until_screen(pilot, TargetDetailScreen)
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.ready >= {"info", "cf", "nearest"}, what="detail loaded")
    await pilot.pause()
    return screen


async def submit(pilot, selector: str, text: str) -> None:
    """Type into an Input (set at once: Pilot has no key for every character) and press Enter."""
    box = pilot.app.screen.query_one(selector)
    box.focus()
    box.value = text
    await pilot.press("enter")


def api(path: Path):
    return dmdb.open(path, read_only=True)


def test_overview_lists_experiments_runs_and_fits(study: Path) -> None:
    async def script(app, pilot):
        await until_screen(pilot, OverviewScreen)
        exps = await until_table(pilot, "#experiments")
        fits = await until_table(pilot, "#fits")
        row = exps.frame.row(0, named=True)
        assert (row["name"], row["fit_runs"], row["holdout_runs"], row["counterfactual_runs"]) == ("e", 40, 10, 5)
        assert fits.frame["estimator"].to_list() == ["test"]
        await wait_for(pilot, lambda: "Browsing fit 1 (test on e" in screen_text(app)
                       and "counterfactual_runs" in screen_text(app), what="the overview's text to be drawn")

    drive(study, script)


def test_fits_table_cursor_is_on_the_browsed_fit(study: Path, tmp_path: Path) -> None:
    """The cursor sat on the first fit, while the app browsed the latest, and went back there after
    Enter browsed another, so a second Enter browsed the first fit."""
    path = tmp_path / "two_fits.duckdb"
    path.write_bytes(study.read_bytes())
    with dmdb.open(path) as db:
        second = insert_fit(db, "e", np.full((200, 30), 0.01), np.zeros(30))

    async def script(app, pilot):
        fits = await until_table(pilot, "#fits")
        await wait_for(pilot, lambda: fits.table.cursor_row == 1, what="the cursor on the latest fit")
        assert app.fit_id == second
        fits.table.focus()
        await pilot.press("up", "enter")
        await wait_for(pilot, lambda: app.fit_id == 1 and "Browsing fit 1" in screen_text(app), what="fit 1")
        await pilot.pause()
        table = app.screen.query_one("#fits", FrameTable)
        assert table.table.cursor_row == 0

    drive(path, script)


def test_keys_alone_browse_another_fit_from_the_overview(study: Path, tmp_path: Path) -> None:
    """Nothing had the focus on the overview and Tab reached only the experiments table (a table
    keeps Tab for its own cursor), so no key could reach the fits: up, Enter did nothing."""
    path = tmp_path / "two_fits.duckdb"
    path.write_bytes(study.read_bytes())
    with dmdb.open(path) as db:
        insert_fit(db, "e", np.full((200, 30), 0.01), np.zeros(30))

    async def script(app, pilot):
        fits = await until_table(pilot, "#fits")
        await wait_for(pilot, lambda: app.focused is fits.table, what="the fits table focused")
        await pilot.press("up", "enter")
        await wait_for(pilot, lambda: app.fit_id == 1 and "Browsing fit 1" in screen_text(app), what="fit 1")

    drive(path, script)


def test_a_narrow_terminal_still_shows_the_experiment_row(study: Path) -> None:
    """At 80 columns the experiments table scrolls sideways, and its scrollbar took the line of its
    only row: the overview showed the header and no experiment."""
    async def main() -> None:
        app = DmdbApp(study)
        async with app.run_test(size=(80, 24)) as pilot:
            await until_table(pilot, "#fits")
            await wait_for(pilot, lambda: "Browsing fit" in screen_text(app), what="the overview")
            await pilot.pause(0.2)
            lines = screen_text(app).splitlines()
            header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("name"))
            # the runs by role come first (the section's title): at 80 columns the last ones were cut off
            assert lines[header].split()[:5] == ["name", "runs", "fit_runs", "holdout_runs", "counterfactual_runs"]
            assert lines[header + 1].split()[:5] == ["e", "55", "40", "10", "5"], "\n".join(lines)

    asyncio.run(main())


def test_targets_table_matches_api_sorts_filters_and_opens(study: Path) -> None:
    with api(study) as db:
        br = analyses.brittleness(db).sort("target")
        margins = db.experiment("e").margins(role=["fit", "holdout"])

    async def script(app, pilot):
        await pilot.press("2")
        await until_screen(pilot, TargetsScreen)
        table = await until_table(pilot, "#targets")
        frame = table.frame.sort("target")
        assert frame.height == 30
        assert frame["support"].to_list() == br["support"].to_list()
        np.testing.assert_allclose(frame["mean_margin"].to_numpy(), margins.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(frame["accuracy"].to_numpy(), (margins > 0).mean(axis=0))
        screen = app.screen
        screen.action_sort("base_margin")  # a header click
        await pilot.pause()
        shown = screen.query_one("#targets", FrameTable).frame
        assert shown["base_margin"].to_list() == sorted(br["base_margin"].to_list(), reverse=True)
        # keys: s sorts by the next column, r reverses; the table keeps the focus throughout
        after = frame.columns[frame.columns.index("base_margin") + 1]
        for key, desc in (("s", True), ("r", False), ("escape", False)):
            want = frame.sort(after, descending=desc, nulls_last=True)[after].to_list()
            await pilot.press(key)
            ft = screen.query_one("#targets", FrameTable)
            await wait_for(pilot, lambda: ft.frame[after].to_list() == want and ft.table is not None
                           and app.focused is ft.table, what=f"the sorted table, focused, after {key}")
            assert screen.query_one("#filter", Input).value == ""
        await pilot.press("slash")
        assert app.focused.id == "filter"
        await submit(pilot, "#filter", "nosuchcolumn > 1")  # a typo: a message, the table unchanged
        await pilot.pause()
        assert screen.query_one("#targets", FrameTable).frame.height == 30
        assert any("bad filter" in str(n.message) for n in app._notifications)
        # also on the status line, which read '30 of 30 targets' as if that were the filter's result
        status = str(screen.query_one("#status").render())
        assert "bad filter 'nosuchcolumn > 1': unable to find column \"nosuchcolumn\"" in status
        assert "of 30 targets" not in status
        await submit(pilot, "#filter", "label = 3")
        await pilot.pause()
        shown = screen.query_one("#targets", FrameTable).frame
        assert shown.height == frame.filter(pl.col("label") == 3).height > 0
        assert set(shown["label"].to_list()) == {3}
        first = int(shown["target"][0])
        await pilot.press("enter")
        await until_screen(pilot, TargetDetailScreen)
        assert app.screen.target == first

    drive(study, script)


def test_keys_typed_in_a_burst_after_slash_reach_the_filter(study: Path) -> None:
    """'/' then '3' typed faster than a frame: the '3' was forwarded to the table, which still had the
    focus while '/' bubbled up to the screen's binding, so the filter box got '' (and Enter opened a
    target). The keys are posted as a terminal's driver posts them, without waiting in between."""
    async def script(app, pilot):
        await pilot.press("2")
        await until_screen(pilot, TargetsScreen)
        ft = await until_table(pilot, "#targets")
        await wait_for(pilot, lambda: app.focused is ft.table, what="the table focused")
        for key, char in (("slash", "/"), ("3", "3"), ("slash", "/"), ("2", "2")):
            app.post_message(events.Key(key, char))
        box = app.screen.query_one("#filter", Input)
        await wait_for(pilot, lambda: box.value == "3/2", what="'3/2' in the filter box")
        assert app.focused is box

    drive(study, script)


def test_keys_typed_in_a_burst_after_slash_reach_the_sql_query_line(study: Path) -> None:
    """The SQL screen's '/' had the Targets filter's race: from the results table, '/' then 'S' typed
    faster than a frame sent the 'S' to the table (the query line got ''), and a '1' went to the screen
    key that switches to the overview. In the query line, '/' is typed as a character."""
    async def script(app, pilot):
        await pilot.press("5")
        await until_screen(pilot, SqlScreen)
        await submit(pilot, "#query", "SELECT 1 AS a")
        table = await until_table(pilot, "#result")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.focused is table.table, what="the result table focused")
        query = app.screen.query_one("#query", Input)
        query.value = ""
        for key, char in (("slash", "/"), ("1", "1"), ("slash", "/"), ("2", "2")):
            app.post_message(events.Key(key, char))
        await wait_for(pilot, lambda: query.value == "1/2", what="'1/2' in the query line")
        assert isinstance(app.screen, SqlScreen) and app.focused is query

    drive(study, script)


def test_targets_that_never_flip_sort_as_the_most_robust(study: Path, tmp_path: Path) -> None:
    """Support largest first put the targets no removal flips (support null: never) last, below
    targets that flip after one removal; they are the most robust, so they lead."""
    path = tmp_path / "never.duckdb"
    path.write_bytes(study.read_bytes())
    with dmdb.open(path) as db:
        T = db.experiment("e").n_targets
        bias = -(1.0 + 0.01 * np.arange(T))  # base margin 1 - 0.01 t: flips after about 100 - t removals of 0.01
        bias[:3] = 50.0  # never flips
        fit = insert_fit(db, "e", np.full((200, T), 0.01), bias)
        support = analyses.brittleness(db, fit=fit).sort("target")["support"].to_list()
    assert support[:3] == [None] * 3 and None not in support[3:] and len(set(support[3:])) > 10

    async def script(app, pilot):
        await pilot.press("2")
        await until_screen(pilot, TargetsScreen)
        await until_table(pilot, "#targets")
        app.screen.action_sort("support")
        await pilot.pause()
        assert app.screen.query_one("#targets", FrameTable).frame["support"].to_list() == [None] * 3 + sorted(support[3:], reverse=True)
        app.screen.action_sort("support")  # again: smallest first, never last
        await pilot.pause()
        assert app.screen.query_one("#targets", FrameTable).frame["support"].to_list() == sorted(support[3:]) + [None] * 3

    drive(path, script)


def test_target_detail_shows_weights_counterfactual_and_neighbours(study: Path) -> None:
    target = 7
    with api(study) as db:
        top = analyses.top_weights(db, target, k=N_EXAMPLES)
        near = analyses.nearest_targets(db, target, k=10)
        expected = {
            (k, mode): analyses.counterfactual(db, target, k=k, mode=mode).row(0, named=True)
            for k, mode in [(10, "top"), (11, "top"), (11, "bottom"), (11, "random"), (3, "random")]
        }

    async def script(app, pilot):
        screen = await open_detail(pilot, target)
        text = screen_text(app)
        pos = top.filter(pl.col("direction") == "positive").sort("rank").row(0, named=True)
        neg = top.filter(pl.col("direction") == "negative").sort("rank").row(0, named=True)
        assert f"#{pos['train_idx']} label {pos['label']}" in text and f"w {pos['weight']:+.4f}" in text
        assert f"#{neg['train_idx']} label {neg['label']}" in text and f"w {neg['weight']:+.4f}" in text
        assert screen.weights.equals(top)
        assert screen.query_one("#nearest", RowList).frame["neighbor"].to_list() == near["neighbor"].to_list()

        async def check(k: int, mode: str) -> None:
            await wait_for(pilot, lambda: "cf" in screen.ready and screen.cf.k == k and screen.cf.mode == mode,
                           what=f"counterfactual k={k} {mode}")
            want = expected[(k, mode)]
            assert screen.cf.predicted_margin == want["predicted_margin"]
            assert screen.cf.flips == want["flips"] and screen.cf.n_removed == want["n_removed"]
            shown = screen_text(app)
            assert f"predicted margin  {want['predicted_margin']:+.4f}" in shown
            assert ("FLIPS" in shown) == want["flips"]

        await check(10, "top")
        await pilot.press("plus")
        await check(11, "top")
        await pilot.press("m")
        await check(11, "bottom")
        await pilot.press("m")
        await check(11, "random")
        await submit(pilot, "#k", "3")
        await check(3, "random")
        assert "not verified" in screen_text(app)

    drive(study, script)


def test_a_k_that_is_not_a_count_is_refused_and_the_box_shows_the_k_in_use(study: Path) -> None:
    """'-5' or an empty k box did nothing on Enter: the box kept '-5' while the panel was for k 10."""
    async def script(app, pilot):
        screen = await open_detail(pilot, 7)
        for typed in ("-5", ""):
            await submit(pilot, "#k", typed)
            await pilot.pause()
            assert screen.k == 10 and screen.query_one("#k", Input).value == "10"
        assert any("k must be a whole number" in str(n.message) for n in app._notifications)
        assert "remove the 10 most helpful" in screen_text(app)
        # with the focus in the box, +, - and m still drive the panel instead of being typed
        box = screen.query_one("#k", Input)
        box.focus()
        await pilot.press("plus", "plus", "minus", "m")
        await wait_for(pilot, lambda: screen.cf.k == 11 and screen.cf.mode == "bottom", what="k 11 bottom")
        assert box.value == "11" and box.has_focus
        await pilot.press("x", "full_stop")  # digits only
        assert box.value == "11"

    drive(study, script)


def test_a_k_the_api_refuses_clears_the_panel_of_the_k_before(study: Path) -> None:
    """k 500 random of 200 train examples is an error: the box said 500 while the panel went on
    showing k 10's predicted margin as if it were k 500's."""
    with api(study) as db:
        before = analyses.counterfactual(db, 7, k=10, mode="random").row(0, named=True)

    async def script(app, pilot):
        screen = await open_detail(pilot, 7)
        await pilot.press("m", "m")
        await wait_for(pilot, lambda: "cf" in screen.ready and screen.cf.mode == "random", what="random")
        assert f"predicted margin  {before['predicted_margin']:+.4f}" in screen_text(app)
        await submit(pilot, "#k", "500")
        await wait_for(pilot, lambda: "no counterfactual for k 500" in screen_text(app), what="the error in the panel")
        panel = str(screen.query_one("#cf").render())
        assert "cannot remove 500 random examples" in panel and "predicted margin" not in panel
        assert "predicted margin  " not in screen_text(app)
        assert screen.cf is None and screen.query_one("#k", Input).value == "500"

    drive(study, script)


def test_verified_outcome_is_the_mean_of_recorded_retraining_runs(study: Path) -> None:
    target, k, mode = VERIFIED
    with api(study) as db:
        runs = db.sql("SELECT info->>'purpose' AS purpose, margins FROM runs WHERE role = 'counterfactual'")
    cf = np.stack(runs.filter(pl.col("purpose") == "counterfactual")["margins"].to_list())[:, target].mean()
    base = np.stack(runs.filter(pl.col("purpose") == "baseline")["margins"].to_list())[:, target].mean()

    async def script(app, pilot):
        screen = await open_detail(pilot, target)
        v = screen.cf.verified
        assert v is not None and v.n_runs == 3
        assert v.mean_margin == pytest.approx(cf, rel=1e-6) and v.baseline_margin == pytest.approx(base, rel=1e-6)
        text = screen_text(app)
        assert "verified by 3 retraining run(s)" in text
        assert f"mean margin {cf:+.4f} (full train set: {base:+.4f})" in text
        await pilot.press("m")  # bottom: nothing recorded
        await wait_for(pilot, lambda: "cf" in screen.ready and screen.cf.mode == "bottom", what="bottom")
        assert screen.cf.verified is None

    drive(study, script)


def test_verified_outcome_says_when_the_full_train_set_models_already_disagree(study: Path, tmp_path: Path) -> None:
    """The datamodel predicted margin > 0 on the full train set, the retrained full-set models had it
    wrong already: the panel said "the prediction FLIPS" and then "-> did not flip", with no reason."""
    path = tmp_path / "wrong_baseline.duckdb"
    path.write_bytes(study.read_bytes())
    with dmdb.open(path) as db:
        cf = analyses.counterfactual(db, VERIFIED[0], k=VERIFIED[1], mode=VERIFIED[2]).row(0, named=True)
        assert cf["base_margin"] >= 0  # the study's target: the datamodel says correct
        exp = db.experiment("e")
        n_train = exp.n_train
        margins = np.zeros((20, 30), np.float32)
        margins[:, VERIFIED[0]] = -5.0  # many baseline runs: their mean for the target is well below 0
        exp.record_batch(np.arange(200, 220), np.ones((20, n_train), bool), margins, role="counterfactual",
                         infos=[{"fit_id": 1, "target": None, "k": 0, "mode": "top", "purpose": "baseline",
                                 "removed": []}] * 20)

    async def script(app, pilot):
        screen = await open_detail(pilot, VERIFIED[0])
        v = screen.cf.verified
        assert v is not None and v.baseline_margin < 0
        panel = str(screen.query_one("#cf").render())
        assert "-> did not flip (already wrong on the full set)" in panel

    drive(path, script)


def test_detail_screen_refilled_for_the_next_target_shows_only_its_numbers(study: Path) -> None:
    with api(study) as db:
        want = {t: (analyses.top_weights(db, t, k=N_EXAMPLES), analyses.counterfactual(db, t, k=10, mode="top"))
                for t in (4, 9)}

    async def script(app, pilot):
        first = await open_detail(pilot, 4)
        await pilot.press("plus", "m")  # k 11, bottom: a new target starts again at k 10, top
        await pilot.press("escape")
        await until_screen(pilot, OverviewScreen)
        second = await open_detail(pilot, 9)
        assert second is first  # the same screen, refilled
        top, cf = want[9]
        assert second.weights.equals(top) and (second.k, second.mode) == (10, "top")
        await wait_for(pilot, lambda: "cf" in second.ready and second.cf.target == 9, what="target 9's counterfactual")
        assert second.cf.predicted_margin == cf["predicted_margin"][0]
        text = screen_text(app)
        pos = top.filter(pl.col("direction") == "positive").sort("rank").row(0, named=True)
        assert "target 9 of e" in text and f"#{pos['train_idx']} label {pos['label']}" in text
        old = want[4][0].filter(pl.col("direction") == "positive").sort("rank").row(0, named=True)
        if old["train_idx"] not in top["train_idx"].to_list():
            assert f"#{old['train_idx']} label" not in text

    drive(study, script)


def test_the_key_of_the_screen_a_detail_was_opened_from_goes_back_to_it(study: Path) -> None:
    """On a target's detail opened from Targets, the footer's '2 Targets' did nothing (the app was
    already in that mode, the detail on top of its list); '3' on one opened from Leakage the same.
    Now the key shows the list, as the other screen keys show theirs."""
    async def script(app, pilot):
        await pilot.press("2")
        await until_screen(pilot, TargetsScreen)
        await until_table(pilot, "#targets")
        await open_detail(pilot, 4)
        await pilot.press("2")
        await until_screen(pilot, TargetsScreen)
        assert app.screen.query_one("#targets", FrameTable).frame.height == 30
        screen = await open_detail(pilot, 6)  # the kept detail screen opens again
        assert screen.target == 6 and screen.trail == []
        await pilot.press("3")
        await until_screen(pilot, LeakageScreen)
        await wait_for(pilot, lambda: app.screen.pair == LEAK, what="pair pictures")
        await pilot.press("enter")
        await until_screen(pilot, TargetDetailScreen)
        assert app.screen.target == LEAK[0]
        await pilot.press("3")
        await until_screen(pilot, LeakageScreen)

    drive(study, script)


def test_nearest_target_opens_its_own_detail(study: Path) -> None:
    with api(study) as db:
        first = int(analyses.nearest_targets(db, 2, k=1)["neighbor"][0])

    async def script(app, pilot):
        await open_detail(pilot, 2)
        await pilot.press("n", "enter")
        await wait_for(pilot, lambda: getattr(app.screen, "target", None) == first, what="neighbour detail")
        await pilot.press("escape")
        await wait_for(pilot, lambda: getattr(app.screen, "target", None) == 2, what="back")

    drive(study, script)


def test_a_detail_left_open_follows_the_browsed_fit(study: Path, tmp_path: Path) -> None:
    """Targets mode's detail of target 2 stayed on fit 1 after fit 2 was browsed in the overview (its
    nearest targets too); now it shows target 2 of fit 2, and leaves for a fit without target 2."""
    path = tmp_path / "fits.duckdb"
    path.write_bytes(study.read_bytes())
    with dmdb.open(path) as db:
        T = db.experiment("e").n_targets
        second = insert_fit(db, "e", np.full((200, T), 0.01), np.zeros(T))
        third = insert_fit(db, "e", np.full((200, 1), 0.02), np.zeros(1), targets=np.array([0]))

    async def script(app, pilot):
        app.browse_fit(1)
        await app.switch_mode("targets")
        await open_detail(pilot, 2)
        assert (app.screen.target, app.screen.fit) == (2, 1)
        for fit, gone in ((second, False), (third, True)):
            await app.switch_mode("overview")
            app.browse_fit(fit)
            await app.switch_mode("targets")
            if gone:
                await until_screen(pilot, TargetsScreen)
            else:
                detail = app.screen
                await wait_for(pilot, lambda: detail.fit == fit and detail.sub_title == f"fit {fit}"
                               and {"info", "cf"} <= detail.ready, what=f"target 2 of fit {fit}")
                # fit 2's datamodel: bias 0 + 200 weights of 0.01
                assert detail.target == 2 and detail.cf.base_margin == pytest.approx(2.0, abs=1e-4)

    drive(path, script)


def squeezed(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("size", [SIZE, (80, 24)])
def test_a_fit_that_planned_no_retraining_shows_another_fits_runs_with_its_predictions(
        compared_study: Path, size: tuple[int, int]) -> None:
    fit, planner = PLANNED_BY_OTHER, 1
    with api(compared_study) as db:
        v = analyses.verification(db, fit, runs_of=planner)
        target = v.rows.group_by("target").len().sort(["len", "target"]).row(-1)[0]  # the target with most removals
        runs = analyses.counterfactual_runs(db, planner)
        weights = db.sql("SELECT train_idx, weight FROM weights WHERE fit_id = ? AND target = ?", [fit, target])
        margins = np.stack(db.sql("SELECT margins FROM runs WHERE run_id IN (SELECT unnest(?::BIGINT[])) ORDER BY run_id",
                                  [runs["run_id"].to_list()])["margins"].to_list()).astype(np.float64)
    rows = v.rows.filter(pl.col("target") == target)
    assert set(rows["purpose"]) == {"counterfactual", "brittleness"}, "the study checks both kinds here"
    # the oracle: fit 2's stored weights of the runs' removed examples; the runs' mean margins less the baseline's
    w = np.zeros(200)
    w[weights["train_idx"].to_numpy()] = weights["weight"].to_numpy()
    base = margins[(runs["purpose"] == "baseline").to_numpy(), target].mean()
    for row in rows.iter_rows(named=True):
        mine = runs.filter((pl.col("target") == target) & (pl.col("k") == row["k"])
                           & (pl.col("purpose") == row["purpose"]))
        removed = np.asarray(mine["removed"][0])
        assert row["predicted_change"] == pytest.approx(-w[removed].sum(), abs=1e-9)
        assert row["actual_change"] == pytest.approx(margins[np.isin(runs["run_id"], mine["run_id"]),
                                                             target].mean() - base, abs=1e-6)

    async def script(app, pilot):
        assert app.fit_id == fit
        screen = await open_detail(pilot, target)
        panel = screen.query_one("#cf-runs")
        panel.scroll_visible(animate=False)
        await pilot.pause()
        text = text_in(app, panel.content_region)
        assert text == squeezed(panel.render().plain), "the panel is shown whole"
        assert text.startswith(f"retrained runs planned by fit {planner} (test), with fit {fit}'s predictions ")
        for row in rows.iter_rows(named=True):
            what = "brittleness support" if row["purpose"] == "brittleness" else f"top {row['k']}"
            assert (f"fit {planner}'s {what} ({row['n_removed']} removed, 2 seed(s)) "
                    f"predicted change {row['predicted_change']:+.4f} actual change {row['actual_change']:+.4f}") in text
            if row["purpose"] == "brittleness":
                outcome = ("already wrong on the full set" if row["actual_base"] < 0
                           else "flipped" if row["actual_margin"] < 0 else "did not flip")
                flip = row["predicted_base"] >= 0 > row["predicted_margin"]
                assert f"-> {outcome}; fit {fit} predicted {'a flip' if flip else 'no flip'}" in text
        n = v.rows.filter(pl.col("purpose") == "counterfactual").height
        assert text.endswith(f"over all {n} removal(s): Spearman {v.spearman:.4f}, Pearson {v.pearson:.4f}")

    drive(compared_study, script, size=size)


def test_the_counterfactual_panel_of_a_fit_that_planned_no_retraining_points_to_the_other_fits_runs(
        compared_study: Path) -> None:
    """The panel said 'not verified: no retraining runs recorded for this removal' right above a
    block of the same target's retrained runs (planned by fit 1): now it says whose runs those are,
    at every k; a fit that planned runs, but none for this removal, still says there are none."""
    target = COMPARED_TARGETS[0]
    pointer = f"not verified: fit {PLANNED_BY_OTHER} planned no retraining of its own; fit 1's retrained runs are below"
    unrecorded = "not verified: no retraining runs recorded for this removal"

    async def script(app, pilot):
        assert app.fit_id == PLANNED_BY_OTHER
        screen = await open_detail(pilot, target)
        assert screen.query_one("#cf-runs").display
        for k in (10, 11):
            if k != screen.k:
                await pilot.press("plus")
            await wait_for(pilot, lambda: "cf" in screen.ready and screen.cf.k == k, what=f"counterfactual k={k}")
            panel = squeezed(screen.query_one("#cf").render().plain)
            assert screen.cf.verified is None and panel.endswith(pointer) and unrecorded not in panel
        await pilot.press("escape")
        app.browse_fit(1)  # planned runs for `target` at k 3 and 10, none at k 11
        screen = await open_detail(pilot, target)
        assert screen.cf.verified is not None and not screen.query_one("#cf-runs").display
        await pilot.press("plus")
        await wait_for(pilot, lambda: "cf" in screen.ready and screen.cf.k == 11, what="counterfactual k=11")
        assert squeezed(screen.query_one("#cf").render().plain).endswith(unrecorded)

    drive(compared_study, script)


def test_the_other_fits_runs_say_which_targets_they_cover_and_a_planning_fit_shows_its_own(compared_study: Path) -> None:
    with api(compared_study) as db:
        v = analyses.verification(db, PLANNED_BY_OTHER, runs_of=1)
    covered = sorted(set(v.rows["target"]))
    assert covered == sorted({*COMPARED_TARGETS, VERIFIED[0], *v.rows.filter(pl.col("purpose") == "brittleness")["target"]})
    lone = next(t for t in range(30) if t not in covered)

    async def script(app, pilot):
        screen = await open_detail(pilot, lone)
        panel = screen.query_one("#cf-runs")
        assert panel.display
        assert squeezed(panel.render().plain).endswith(
            f"none for target {lone}: they retrained for target(s) {', '.join(map(str, covered))} (ctrl+p opens one) "
            f"over all {len(COMPARED_TARGETS) * 2 + 1} removal(s): Spearman {v.spearman:.4f}, Pearson {v.pearson:.4f}")
        await pilot.press("escape")
        app.browse_fit(1)  # the fit that planned the runs: its panel shows its own, as before
        screen = await open_detail(pilot, VERIFIED[0])
        assert not screen.query_one("#cf-runs").display and screen.cf.verified is not None

    drive(compared_study, script)


@pytest.mark.parametrize("size", [SIZE, (80, 24)])
def test_fits_table_shows_each_fits_verification_on_the_shared_runs_next_to_its_lds(
        compared_study: Path, size: tuple[int, int]) -> None:
    with api(compared_study) as db:
        want = analyses.compare_verifications(db, runs_of=1)
        own = analyses.verification(db, 1)
    assert want["fit_id"].to_list() == [1, PLANNED_BY_OTHER] and own.summary()["spearman"].item() == want["spearman"][0]

    async def script(app, pilot):
        table = await until_table(pilot, "#fits")
        frame = table.frame
        assert frame.columns[3:8] == ["lds", "cf_spearman", "cf_pearson", "cf_n", "cf_runs_of"]
        assert frame.select("fit_id", "cf_spearman", "cf_pearson", "cf_n", "cf_runs_of").rows() == want.select(
            "fit_id", "spearman", "pearson", "counterfactuals", "runs_of").rows()
        await wait_for(pilot, lambda: "removals retrained for fit 1 (test)" in squeezed(screen_text(app)),
                       what="the summary")
        lines = screen_text(app).splitlines()
        header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["fit_id"])
        assert lines[header].split()[3:7] == ["lds", "cf_spearman", "cf_pearson", "cf_n"]
        spearman, pearson = (round_column(want[c], 4) for c in ("spearman", "pearson"))
        for i in range(2):
            cells = lines[header + 1 + i].split()
            assert cells[:2] == [str(want["fit_id"][i]), "e"]
            assert cells[4:7] == [str(spearman[i]), str(pearson[i]), str(want["counterfactuals"][i])]

    drive(compared_study, script, size=size)


def test_runs_that_cannot_be_compared_say_why_instead_of_figures(compared_study: Path, tmp_path: Path) -> None:
    path = tmp_path / "no_baseline.duckdb"
    path.write_bytes(compared_study.read_bytes())
    with dmdb.open(path) as db:
        db.sql("DELETE FROM runs WHERE role = 'counterfactual' AND info->>'purpose' = 'baseline'")
    why = "fit 1 has counterfactual runs but no baseline (full train set) runs to compare them with"
    with Service.open(path) as svc:
        figures, problems = svc.compared(["e"])
        assert figures.is_empty() and len(problems) == 1 and problems[0].startswith(f"experiment e: {why}")
        other = svc.runs_of_another(PLANNED_BY_OTHER, COMPARED_TARGETS[0])
        assert (other.runs_of, other.verification) == (1, None) and other.error.startswith(why)

    async def script(app, pilot):
        await wait_for(pilot, lambda: f"not compared: experiment e: {why}" in squeezed(screen_text(app)),
                       what="the summary's reason")
        table = await until_table(pilot, "#fits")
        assert "cf_spearman" not in table.frame.columns
        screen = await open_detail(pilot, COMPARED_TARGETS[0])
        assert squeezed(screen.query_one("#cf-runs").render().plain).startswith(
            f"retrained runs planned by fit 1 (test), with fit {PLANNED_BY_OTHER}'s predictions none: {why}")

    drive(path, script)


def test_the_footer_keeps_help_and_screen_keys_on_an_80_column_terminal(study: Path) -> None:
    """At 80 columns the footer ended mid-word ('3 Leaka' on Targets; before the screen keys on the
    detail), hiding ? Help; a footer that does not fit is compact and shows the keys 1-5 as one '1-5 screens'."""
    async def main() -> None:
        app = DmdbApp(study)
        async with app.run_test(size=(80, 24)) as pilot:
            await until_screen(pilot, OverviewScreen)
            for go in (lambda: pilot.press("2"), lambda: open_detail(pilot, 2)):
                await go()
                await wait_for(pilot, lambda: "? Help" in screen_text(app).splitlines()[-1], what="the help key")
                footer = screen_text(app).splitlines()[-1]
                assert "1-5 screens" in footer and "Overview" not in footer and "palette" not in footer
                assert ("Filter" in footer) if isinstance(app.screen, TargetsScreen) else ("Nearest" in footer)
            # at 120 columns the detail's full footer ended at '?', before 'Help': compact where it does not fit
            await pilot.resize_terminal(120, 40)
            await pilot.pause()
            await wait_for(pilot, lambda: "? Help" in screen_text(app).splitlines()[-1], what="the help key at 120")
            await pilot.resize_terminal(150, 40)
            await wait_for(pilot, lambda: "4 Embeddings" in screen_text(app).splitlines()[-1], what="the full footer")

    asyncio.run(main())


def test_an_80_column_terminal_shows_titles_key_columns_and_hints_whole(study: Path) -> None:
    """At 80 x 24: the detail's section titles and mode ended mid-word ('(top', '(m'), the targets'
    support and the leakage's pixel_dist (both named in the status line) were cut off, the plot
    lost its title (plotext drops one too long), and the input hints were cut short."""
    from dmdb.analyses import variance_shares

    def header(name: str) -> str:
        return next(line for line in screen_text(app).splitlines() if line.split()[:1] == [name])

    def whole(widget) -> bool:
        return text_in(app, widget.content_region) == " ".join(widget.render().plain.split())

    async def main() -> None:
        nonlocal app
        app = DmdbApp(study)
        async with app.run_test(size=(80, 24)) as pilot:
            await until_screen(pilot, OverviewScreen)
            await pilot.press("2")
            await until_table(pilot, "#targets")
            await wait_for(pilot, lambda: "sorted by target" in screen_text(app), what="the targets")
            assert "support" in header("target").split()
            box = app.screen.query_one("#filter", Input)
            assert len(box.placeholder) <= box.content_size.width
            screen = await open_detail(pilot, 2)
            await pilot.press("m", "m")  # the longest mode: random
            await wait_for(pilot, lambda: screen.cf is not None and screen.cf.mode == "random", what="mode random")
            await pilot.pause()
            titles = list(screen.query(".section"))
            assert len(titles) == 4
            for widget in [*titles[:2], screen.query_one("#mode"), *titles[2:]]:  # below the fold: scroll to it
                widget.scroll_visible(animate=False)
                await pilot.pause()
                assert whole(widget), f"{widget.render().plain!r} shows as {text_in(app, widget.content_region)!r}"
            assert "label" in text_in(app, screen.query_one("#nearest").content_region).split()
            await pilot.press("escape", "3")
            await until_table(pilot, "#candidates")
            await wait_for(pilot, lambda: app.screen.pair is not None, what="the pair")
            assert "pixel_dist" in header("rank").split()
            await pilot.press("4")
            await until_table(pilot, "#points")
            scatter = app.screen.query_one("#scatter")
            await wait_for(pilot, lambda: scatter.explained is not None, what="the plot")
            await pilot.pause()
            assert variance_shares(scatter.explained) in screen_text(app)
            await pilot.press("5")
            await until_screen(pilot, SqlScreen)
            box = app.screen.query_one("#query", Input)
            assert len(box.placeholder) <= box.content_size.width

    app = None
    asyncio.run(main())


def test_leakage_pictures_leave_the_rest_of_a_tall_terminal_to_the_table(study: Path) -> None:
    """The pictures' row took half the screen (a Horizontal is 1fr high): at 50 lines, 15 blank lines
    under the pictures and a table of 22 rows."""
    async def script(app, pilot):
        await pilot.press("3")
        table = await until_table(pilot, "#candidates")
        await wait_for(pilot, lambda: app.screen.pair is not None, what="the pair")
        await pilot.pause()
        pictures = app.screen.query_one("#pair-target")
        assert app.screen.query_one("#pair").size.height == pictures.size.height > 0
        assert table.size.height == app.size.height - 3 - pictures.size.height  # header, status, footer

    drive(study, script)


def test_leakage_service_counts_every_candidate_beyond_the_shown_ones(study: Path) -> None:
    with api(study) as db:
        every = analyses.leakage(db, limit=None)
    assert every.height > 2
    service = Service.open(study)
    try:
        frame, total = service.leakage(int(every["fit_id"][0]), limit=2)
    finally:
        service.close()
    assert frame.height == 2 and total == every.height


def test_leakage_lists_the_planted_pair_first_and_opens_it(study: Path) -> None:
    with api(study) as db:
        want = analyses.leakage(db, limit=200)

    async def script(app, pilot):
        await pilot.press("3")
        await until_screen(pilot, LeakageScreen)
        table = await until_table(pilot, "#candidates")
        assert table.frame.height == want.height
        assert (table.frame["target"][0], table.frame["train_idx"][0]) == LEAK
        assert table.frame["robust_z"].to_list() == want["robust_z"].to_list()
        await wait_for(pilot, lambda: app.screen.pair == LEAK, what="pair pictures")
        assert f"train #{LEAK[1]}" in screen_text(app)
        await pilot.press("enter")
        await until_screen(pilot, TargetDetailScreen)
        assert app.screen.target == LEAK[0]

    drive(study, script)


def test_leakage_of_a_fit_without_candidates_drops_the_last_fits_pair(study: Path, tmp_path: Path) -> None:
    """Browsing another fit with no candidates kept the pictures of the previous fit's pair."""
    path = tmp_path / "two_fits.duckdb"
    path.write_bytes(study.read_bytes())
    with dmdb.open(path) as db:
        quiet = insert_fit(db, "e", np.full((200, 30), 0.01), np.zeros(30))
        assert analyses.leakage(db, fit=quiet).height == 0

    async def script(app, pilot):
        app.browse_fit(1)
        await pilot.press("3")
        await until_screen(pilot, LeakageScreen)
        await wait_for(pilot, lambda: app.screen.pair == LEAK, what="pair pictures")
        await pilot.press("1")
        app.browse_fit(quiet)
        await pilot.press("3")
        await wait_for(pilot, lambda: f"fit {quiet}: no (target, train example) weight stands out" in screen_text(app),
                       what="no candidates")  # not "0 candidate pair(s) ... Enter opens the target"
        await pilot.pause()
        assert app.screen.pair is None
        assert f"train #{LEAK[1]}" not in screen_text(app)

    drive(path, script)


def test_embeddings_scatter_and_jump(study: Path) -> None:
    async def script(app, pilot):
        await pilot.press("4")
        await until_screen(pilot, EmbeddingsScreen)
        table = await until_table(pilot, "#points")
        pts = table.frame
        assert pts.height == 30 and pts["pc0"].to_list() == sorted(pts["pc0"].to_list(), reverse=True)
        with api(study) as db:  # the same PCA the analyses module computes
            from dmdb.analyses.spectral import normalised_rows, pca

            scores, _, _, _, ratio, _ = pca(normalised_rows(analyses.load_weights(db, cache=False)), 2, seed=0)
        by_target = pts.sort("target")
        np.testing.assert_allclose(by_target["pc0"].to_numpy(), scores[:, 0], atol=1e-9)
        text = screen_text(app)
        # the plot says how much of the variance its axes explain (near-equal small shares: little structure)
        assert analyses.variance_shares(ratio) in text and f"target {int(pts['target'][0])}" in text
        await pilot.press("down", "enter")
        await until_screen(pilot, TargetDetailScreen)
        assert app.screen.target == int(pts["target"][1])

    drive(study, script)


def test_service_embedding_gives_the_variance_share_of_each_axis(study: Path, tmp_path: Path) -> None:
    path = tmp_path / "embedded.duckdb"
    shutil.copy(study, path)
    for n in (3, 1):
        with dmdb.open(path) as db:
            stored = analyses.embed(db, fit=1, n_components=n, n_clusters=2)
        ratios = stored.filter(pl.col("kind") == "component")["explained_variance_ratio"].to_list()
        with Service.open(path) as svc:
            got = svc.embedding(1)
        assert got.source == "stored embeddings (dmdb embed)" and got.points.height == 30
        assert got.explained == (ratios[0], ratios[1] if n > 1 else 0.0)
        if n == 1:  # one stored component: the second axis is zero (it raised ColumnNotFoundError on pc1)
            assert got.points["pc1"].to_list() == [0.0] * 30


def test_sql_console_runs_queries_keeps_history_and_reports_errors(study: Path) -> None:
    async def script(app, pilot):
        await pilot.press("5")
        await until_screen(pilot, SqlScreen)
        await pilot.pause()
        await submit(pilot, "#query", "SELECT target, nnz FROM fit_targets ORDER BY nnz DESC, target LIMIT 3")
        table = await until_table(pilot, "#result")
        with api(study) as db:
            want = db.sql("SELECT target, nnz FROM fit_targets ORDER BY nnz DESC, target LIMIT 3")
        assert table.frame.equals(want)
        assert "3 row(s) x 2 column(s)" in screen_text(app) and "statements" not in screen_text(app)
        # several statements: the last one's rows, and a note that says so (nothing said it)
        await submit(pilot, "#query", "SELECT 41 AS a; SELECT 42 AS b, 43 AS c")
        await wait_for(pilot, lambda: "the last of 2 statements" in screen_text(app), what="the note")
        assert table.frame.rows() == [(42, 43)]
        await submit(pilot, "#query", "SET threads = 2")  # a statement without a result says so, not "0 x 0"
        await wait_for(pilot, lambda: "done, no result" in screen_text(app), what="the no-result status")
        assert table.frame.width == 0 and "row(s)" not in screen_text(app)
        query = app.screen.query_one("#query")
        await submit(pilot, "#query", "DELETE FROM weights")
        await wait_for(pilot, lambda: "read-only" in screen_text(app).lower(), what="read-only error")
        assert table.frame.is_empty()  # the previous query's rows are not left under the error
        query.value = ""
        await pilot.press("up")
        assert query.value == "DELETE FROM weights"
        await pilot.press("up")
        assert query.value == "SET threads = 2"
        await pilot.press("up")
        assert query.value.startswith("SELECT 41")
        await pilot.press("up")
        assert query.value.startswith("SELECT target, nnz")
        assert app.sql_history[-1] == "DELETE FROM weights"
        # escape leaves the query line, so the screen keys work again (they were typed into it)
        await pilot.press("escape")
        await wait_for(pilot, lambda: table.table.has_focus, what="the result table focused")
        await pilot.press("1")
        await until_screen(pilot, OverviewScreen)

    drive(study, script)
    with api(study) as db:
        assert db.sql("SELECT count(*) AS n FROM weights")["n"][0] > 0


RUNAWAY = "SELECT count(*) AS n FROM range(1000000) a, range(1000000) b WHERE a.range + b.range = 7"
"""A query that runs for hours: a join without an equality, over 10^12 pairs."""


def running_query(svc: Service) -> bool:
    """Whether another thread is inside a service call (holds its lock): the runaway query started."""
    if not svc._lock.acquire(blocking=False):
        return True
    svc._lock.release()
    return False


async def runaway_in_console(app, pilot) -> None:
    """RUNAWAY submitted in the SQL console, returned once it holds the service."""
    await pilot.press("5")
    await until_screen(pilot, SqlScreen)
    await submit(pilot, "#query", RUNAWAY)
    await wait_for(pilot, lambda: running_query(app.service), what="the runaway query running")

def start_runaway(svc: Service) -> tuple[threading.Thread, list[Exception]]:
    """RUNAWAY on a thread of its own, returned once it holds the service; the errors it raises
    (DmdbError, e.g. Stopped) land in the list."""
    errors: list[Exception] = []

    def run() -> None:
        try:
            svc.sql(RUNAWAY)
        except DmdbError as e:
            errors.append(e)

    query = threading.Thread(target=run, daemon=True)
    query.start()
    for _ in range(600):
        if running_query(svc):
            break
        time.sleep(0.05)
    return query, errors


def test_a_new_console_query_stops_the_one_still_running(study: Path) -> None:
    """A runaway query held the database: the next query waited for it (for hours), and so did every
    other screen. Enter on a new query now stops the one running."""
    async def script(app, pilot):
        try:
            await runaway_in_console(app, pilot)
            await submit(pilot, "#query", "SELECT 42 AS answer")
            table = await until_table(pilot, "#result")
            await wait_for(pilot, lambda: table.frame.rows() == [(42,)] and "1 row(s) x 1 column(s)" in screen_text(app),
                           what="the new query's result")
        finally:
            app.service.db.con.interrupt()  # leaves no runaway query behind if the test fails

    drive(study, script)


def test_closing_the_service_stops_the_query_running(study: Path) -> None:
    """Quitting while a long query ran waited for the query to end (the app's unmount closes the
    service, which waited for its lock): `q` left the screen frozen for as long as the query took."""
    svc = Service.open(study)
    query, errors = start_runaway(svc)
    closing = threading.Thread(target=svc.close, daemon=True)
    closing.start()
    closing.join(30)
    if closing.is_alive():
        svc.db.con.interrupt()  # leaves no runaway query behind
    assert not closing.is_alive(), "close() waited for the running query"
    query.join(30)
    assert [str(e) for e in errors] == ["SQL error: INTERRUPT Error: Interrupted!"]
    svc.close()  # a second close is harmless


def test_a_screen_waiting_behind_a_long_query_says_what_runs_and_ctrl_g_stops_it(study: Path) -> None:
    """A long console query held the database and the other screens said only "loading ...": nothing
    told what they waited for or how to get out. Now the waiting screen names the call and the stop
    key, which the footer shows while a call runs; ctrl+g stops it and the screen loads."""
    async def script(app, pilot):
        try:
            await runaway_in_console(app, pilot)
            await pilot.press("escape", "2")
            await until_screen(pilot, TargetsScreen)
            status = app.screen.query_one("#status")
            await wait_for(pilot, lambda: "ctrl+g stops it" in status.render().plain, what="the waiting note")
            text = " ".join(status.render().plain.split())
            assert text.startswith("loading the targets of fit 1 ... the database has been reading the SQL "
                                   "console's query (SELECT count(*) AS n FROM range(1000000) a")
            await wait_for(pilot, lambda: "^g Stop" in screen_text(app).splitlines()[-1], what="the stop key")
            await pilot.press("ctrl+g")
            table = await until_table(pilot, "#targets")
            assert table.frame.height == 30
            await wait_for(pilot, lambda: "^g Stop" not in screen_text(app).splitlines()[-1], what="no stop key")
            await pilot.press("5")
            await until_screen(pilot, SqlScreen)
            assert " ".join(app.screen.query_one("#status").render().plain.split()).startswith(
                "stopped reading the SQL console's query (SELECT count(*)")
        finally:
            app.service.db.con.interrupt()  # leaves no runaway query behind if the test fails

    drive(study, script)


def test_a_stopped_screen_says_so_and_loads_when_shown_again(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The leakage screen's own long call, stopped: the screen says so (not "loading" for ever, not a
    traceback) and loads again once left and shown again."""
    real = analyses.leakage

    def slow_leakage(db, **kw):
        db.con.execute(RUNAWAY)
        return real(db, **kw)

    async def script(app, pilot):
        monkeypatch.setattr(analyses, "leakage", slow_leakage)
        try:
            await pilot.press("3")
            await until_screen(pilot, LeakageScreen)
            status = app.screen.query_one("#status")
            await wait_for(pilot, lambda: "ctrl+g stops it" in status.render().plain, what="the waiting note")
            assert "reading the leakage candidates of fit 1 for" in " ".join(status.render().plain.split())
            await pilot.press("ctrl+g")
            await wait_for(pilot, lambda: "stopped" in status.render().plain, what="the stopped note")
            assert " ".join(status.render().plain.split()) == (
                "stopped reading the leakage candidates of fit 1. Leave this screen and come back to load it again.")
            monkeypatch.setattr(analyses, "leakage", real)
            await pilot.press("1", "3")
            table = await until_table(pilot, "#candidates")
            assert (table.frame["target"][0], table.frame["train_idx"][0]) == LEAK
        finally:
            app.service.db.con.interrupt()

    drive(study, script)


def test_service_says_what_runs_and_stops_it(study: Path) -> None:
    svc = Service.open(study)
    try:
        assert svc.running() is None and svc.stop() is None
        query, errors = start_runaway(svc)
        what, seconds = svc.running()
        assert what == f"the SQL console's query ({RUNAWAY[:60]})" and seconds >= 0
        assert svc.stop() == what
        query.join(30)
        assert not query.is_alive() and svc.running() is None
        assert [type(e).__name__ for e in errors] == ["Stopped"] and str(errors[0]) == f"stopped reading {what}"
        assert svc.sql("SELECT 1 AS one")[0].rows() == [(1,)]  # the session goes on
    finally:
        svc.db.con.interrupt()
        svc.close()


async def sql_column(app, pilot, query: str, rows: int) -> list[str]:  # type: ignore[no-untyped-def]
    """The first `rows` cells, as shown, of the SQL console's one-column result `x` of `query`."""
    await pilot.press("5")
    await until_screen(pilot, SqlScreen)
    await submit(pilot, "#query", query)
    await until_table(pilot, "#result")
    await wait_for(pilot, lambda: f"{rows} row(s) x 1 column(s)" in screen_text(app), what="the result")
    await pilot.pause()
    lines = screen_text(app).splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip() == "x")
    return [line.strip() for line in lines[header + 1:header + 1 + rows]]


def test_sql_results_show_small_numbers_as_stored(study: Path) -> None:
    """The console rounded each float column to 4 digits of its largest value: beside a 2.1, a
    weight of 3e-05 read 0 and -0.0004 read -0."""
    async def script(app, pilot):
        shown = await sql_column(app, pilot, "SELECT x FROM (VALUES (2.1::DOUBLE), (0.00003), (-0.0004)) t(x)", 3)
        assert [float(v) for v in shown] == [2.1, 0.00003, -0.0004]

    drive(study, script)


def test_a_float_longer_than_the_columns_extremes_is_shown_whole(study: Path) -> None:
    """The table sized a float column from its smallest and largest value: beside 1 and -0.5, 0.123456
    read '0.1…' (the demo's embeddings showed pc1 -0.0012 as '-0.00…' beside -0.65 and 0.6932)."""
    async def script(app, pilot):
        shown = await sql_column(app, pilot, "SELECT x FROM (VALUES (1.0::DOUBLE), (0.123456), (-0.5)) t(x)", 3)
        assert shown == ["1", "0.123456", "-0.5"]

    drive(study, script, size=(80, 24))


def test_help_names_every_key_each_screen_shows_in_its_footer(study: Path) -> None:
    """The help left out `n` (nearest targets) on the detail screen and `/` and `escape` on the
    SQL screen, which the footers offer."""
    from tui.screens.help import HELP

    sections = {TargetsScreen: "**Targets**:", TargetDetailScreen: "**Target detail**:", SqlScreen: "**SQL**:"}
    shown_as = {"slash": "/", "plus": "+", "minus": "-", "question_mark": "?"}
    for screen, title in sections.items():
        paragraph = HELP.split("\n" + title, 1)[1].split("\n\n", 1)[0]
        for binding in screen.BINDINGS:
            key = binding.key.split(",")[0]
            assert f"`{shown_as.get(key, key)}`" in paragraph, f"{title} does not name the key {key}"

    # the help has no footer: it names its own keys, which close it (there `q` does not quit)
    row = next(line for line in HELP.splitlines() if line.startswith("| `?` |"))
    for key in HelpScreen.BINDINGS[0].key.split(","):
        assert f"`{shown_as.get(key, key)}`" in row.split("closes it")[0], f"the help does not say {key} closes it"

    async def script(app, pilot):
        await pilot.press("question_mark")
        await until_screen(pilot, HelpScreen)
        text = " ".join(screen_text(app).split())
        assert "nearest targets (n moves to them, Enter opens one)" in text
        assert "escape leaves the query line for the results" in text
        assert "this help (escape, q or ? closes it)" in text

    drive(study, script)


def test_help_screen_command_palette_and_q_quits(study: Path) -> None:
    async def script(app, pilot):
        await until_screen(pilot, OverviewScreen)
        await pilot.press("question_mark")
        await until_screen(pilot, HelpScreen)
        assert "Target detail" in screen_text(app)
        await pilot.press("escape")
        await until_screen(pilot, OverviewScreen)
        async def open_from_palette(target: str) -> None:
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*target)
            await wait_for(pilot, lambda: f"Open target {target}" in screen_text(app), what="palette hit")
            await pilot.press("enter")

        # first, a target the fit does not have: a message, and no half-drawn detail screen
        await open_from_palette("99999")
        await wait_for(pilot, lambda: any("no target 99999" in str(n.message) for n in app._notifications),
                       what="the error notice")
        await until_screen(pilot, OverviewScreen)
        await open_from_palette("12")
        await until_screen(pilot, TargetDetailScreen)
        assert app.screen.target == 12
        await pilot.press("q")
        await pilot.pause()
        assert app._exit

    drive(study, script)


# -- databases the app cannot browse -------------------------------------------------------------


def test_missing_database_is_a_message(tmp_path: Path) -> None:
    async def script(app, pilot):
        await until_screen(pilot, MessageScreen)
        text = screen_text(app)
        assert "Cannot open the database" in text and "no database at" in text and "Traceback" not in text
        assert not app.screen.query("#retry")
        await pilot.press("q")
        await pilot.pause()
        assert app._exit

    drive(tmp_path / "nope.duckdb", script, opens=False)


def test_no_fit_database_says_so_and_still_shows_runs(empty_study: Path) -> None:
    async def script(app, pilot):
        await until_screen(pilot, OverviewScreen)
        await wait_for(pilot, lambda: "no fit yet" in screen_text(app), what="no-fit notice")
        await pilot.press("2")
        await until_screen(pilot, TargetsScreen)
        await wait_for(pilot, lambda: "holds no fit yet" in screen_text(app), what="targets no-fit")
        app.open_target(0)
        await wait_for(pilot, lambda: any("no fit to show targets of" in str(n.message) for n in app._notifications),
                       what="the no-fit warning")
        assert isinstance(app.screen, TargetsScreen)

    drive(empty_study, script)


def test_no_fit_targets_screen_keys_neither_crash_nor_type_into_the_filter(empty_study: Path) -> None:
    """With no targets loaded, Escape, Enter, r and s did sort a frame without columns (a traceback),
    and the filter box took the focus, so 1-5 typed digits into it instead of changing screens."""
    async def script(app, pilot):
        await until_screen(pilot, OverviewScreen)
        await pilot.press("2")
        await until_screen(pilot, TargetsScreen)
        await wait_for(pilot, lambda: "holds no fit yet" in screen_text(app), what="targets no-fit")
        screen = app.screen
        assert app.focused is None or app.focused.id != "filter"
        await pilot.press("escape", "r", "s")
        await pilot.press("slash")
        assert app.focused.id == "filter"
        await pilot.press("enter")
        await pilot.pause()
        assert app.is_running and app.screen is screen
        assert screen.query_one("#filter", Input).value == ""
        screen.set_focus(None)
        await pilot.press("5")
        await until_screen(pilot, SqlScreen)

    drive(empty_study, script)


def test_locked_database_offers_retry(tmp_path: Path, study: Path) -> None:
    path = tmp_path / "locked.duckdb"
    path.write_bytes(study.read_bytes())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "time.sleep(120)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"

        async def script(app, pilot):
            await until_screen(pilot, MessageScreen)
            text = screen_text(app)
            assert "locked by a writer" in text and "Retry" in text and "Traceback" not in text
            assert "Last try: " in text  # a retry that fails again shows a new time, not the same screen
            await pilot.press("r")
            await until_screen(pilot, MessageScreen)  # still locked: the message again
            holder.kill()
            holder.wait()
            await pilot.pause(0.3)
            await pilot.press("r")
            await until_screen(pilot, OverviewScreen)

        drive(path, script, opens=False)
    finally:
        holder.kill()
        holder.wait()


def test_service_counterfactual_is_the_api_row(study: Path) -> None:
    with Service.open(study) as svc, api(study) as db:
        for target, k, mode in [(0, 5, "top"), (9, 20, "bottom"), (29, 7, "random")]:
            got = svc.counterfactual(1, target, k, mode)
            want = analyses.counterfactual(db, target, k=k, mode=mode).row(0, named=True)
            assert (got.base_margin, got.predicted_margin, got.flips) == (
                want["base_margin"], want["predicted_margin"], want["flips"])

