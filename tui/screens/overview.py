"""Overview: experiments with run counts by role, and fits with estimator, LDS, verification on the
shared retrained runs and time taken."""

from __future__ import annotations

import polars as pl
from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Header, Label, Static

from ..widgets import FrameTable, KeyFooter
from .base import DataScreen


class OverviewScreen(DataScreen):
    """First screen: what is in the database, and which fit the other screens browse."""

    STATUS = "#summary"

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="overview"):
            yield Static(id="summary")
            yield Label("Experiments (runs by role)", classes="section")
            yield FrameTable(id="experiments", classes="short")
            yield Label("Fits (Enter browses that fit)", classes="section")
            yield FrameTable(id="fits")
        yield KeyFooter()

    def reload(self) -> None:
        self.fetch("overview", self.load_overview, waiting="loading the experiments and fits ...")

    def load_overview(self) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
        """Experiments, and fits with their verification figures (COMPARED's columns after the LDS,
        when any experiment has retrained runs); and the experiments whose runs could not be compared."""
        svc = self.service
        exps, fits = svc.experiments(), svc.fits()
        figures, problems = svc.compared(fits["experiment"].unique(maintain_order=True).to_list())
        if not figures.is_empty():
            cols = fits.columns
            at = cols.index("lds") + 1
            fits = fits.join(figures.cast({"fit_id": fits.schema["fit_id"]}), on="fit_id", how="left").select(
                *cols[:at], *figures.columns[1:], *cols[at:])
        return exps, fits, problems

    async def show_overview(self, value: tuple[pl.DataFrame, pl.DataFrame, list[str]]) -> None:
        exps, fits, problems = value
        runs = [c for c in exps.columns if c.endswith("runs")]  # runs, then by role: what the title promises
        rest = [c for c in exps.columns if c not in runs and c not in ("name", "created_at")]
        self.query_one("#experiments", FrameTable).show(exps.select("name", *runs, *rest))
        table = self.query_one("#fits", FrameTable)
        await table.show(fits)
        fit = self.fit_id
        if fit is not None and table.table is not None and fit in fits["fit_id"]:
            table.table.move_cursor(row=fits["fit_id"].to_list().index(fit))  # on the browsed fit, not the first
        table.focus_table()  # the keys reach the fits: Tab cannot get there (a table keeps Tab for its cursor)
        if fit is None:
            text = (f"{exps.height} experiment(s), [b $warning]no fit yet[/]: quit (q), run `dmdb fit` on this "
                    "database to fit datamodels, then reopen (the open TUI keeps writers out). SQL (5) works meanwhile.")
        else:
            row = fits.filter(pl.col("fit_id") == fit).row(0, named=True)
            lds = "n/a" if row["lds"] is None else f"{row['lds']:.3f}"
            text = (f"{exps.height} experiment(s), {fits.height} fit(s). "
                    f"Browsing fit [b]{fit}[/b] ({row['estimator']} on {row['experiment']}, LDS {lds}, "
                    f"{row['n_targets']} targets).\nKeys: 2 targets, 3 leakage, 4 embeddings, 5 SQL, ? help, q quit.")
            if row.get("cf_runs_of") is not None:
                planner = fits.filter(pl.col("fit_id") == row["cf_runs_of"]).row(0, named=True)
                text += (f"\ncf_spearman, cf_pearson: each fit's predicted vs actual margin change over the cf_n "
                         f"removals retrained for fit {planner['fit_id']} ({planner['estimator']}); "
                         "`dmdb verify --compare` has more.")
        text += "".join(f"\n[b $warning]not compared[/]: {escape(p)}" for p in problems)
        self.query_one("#summary", Static).update(text)

    def on_frame_table_row_chosen(self, event: FrameTable.RowChosen) -> None:
        if event.table.id == "fits":
            self.dmdb_app.browse_fit(int(event.row["fit_id"]))
            self.reload()
