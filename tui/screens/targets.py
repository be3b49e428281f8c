"""Targets: every target of the fit in one sortable, filterable table."""

from __future__ import annotations

import polars as pl
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Input, Static

from ..widgets import FrameTable, KeyFooter
from .base import DataScreen


def filter_frame(frame: pl.DataFrame, text: str) -> pl.DataFrame:
    """A bare number picks that target; anything else is a polars SQL condition over the columns."""
    text = text.strip()
    if not text:
        return frame
    if text.isdigit():
        return frame.filter(pl.col("target") == int(text))
    return frame.filter(pl.sql_expr(text))


class TargetsScreen(DataScreen):
    AUTO_FOCUS = "DataTable"  # not the filter box: it would take 1-5 and q while the table loads, or with no fit
    BINDINGS = [
        Binding("slash", "search", "Filter", priority=True),  # priority: see focus_input_now
        Binding("s", "sort", "Sort"),
        Binding("r", "reverse", "Reverse"),
        Binding("escape", "clear", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.all = pl.DataFrame()
        self.sort_by: tuple[str, bool] = ("target", False)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="a target id, or e.g. label = 3 and support < 20 (Enter applies)", id="filter")
        yield Static(id="status", classes="status")
        yield FrameTable(id="targets")
        yield KeyFooter()

    def reload(self) -> None:
        self.fetch_for_fit("targets", self.service.targets, f"loading the targets of fit {self.fit_id} ...")

    def show_targets(self, frame: pl.DataFrame) -> None:
        self.all = frame.drop("fit_id")
        self.refresh_table(focus=True)

    def refresh_table(self, focus: bool = False) -> None:
        """Show the filtered, sorted targets; with `focus`, the table takes the focus and the
        caption (which tells the user Enter opens a target) appears only once it has, so an
        Enter pressed on seeing it reaches the table, not the filter box. Nothing to show before
        the targets are in (or with no fit): sorting a frame without columns raised."""
        if not self.all.columns:
            return
        text = self.query_one("#filter", Input).value
        try:
            shown = filter_frame(self.all, text)
        except Exception as e:  # noqa: BLE001 - a typo in the filter is reported, not raised
            self.report_bad_filter(text, e)
            return
        col, desc = self.sort_by
        # a null support means no removal flips the target: the most robust, so it sorts as the largest
        shown = shown.sort(col, descending=desc, nulls_last=not (desc and col == "support"))
        self.query_one(FrameTable).show(shown)
        arrow = "desc" if desc else "asc"
        caption = (
            f"fit {self.fit_id}: {shown.height} of {self.all.height} targets, sorted by {col} ({arrow}). "
            "Enter opens a target; support = removals predicted to flip it (brittleness)."
        )
        status = self.query_one("#status", Static)
        if focus:
            self.query_one(FrameTable).focus_table(then=lambda: status.update(caption))
        else:
            status.update(caption)

    def report_bad_filter(self, text: str, error: Exception) -> None:
        """Say why the filter failed, in a toast and on the status line: the toast goes, and the
        caption it would leave ('30 of 30 targets') read as the filter's result."""
        message = f"bad filter {text!r}: {' '.join(str(error).split())}"
        self.notify(message, severity="error")
        self.query_one("#status", Static).update(
            Text(f"{message}\nThe table still shows the targets before it; fix the filter, or escape clears it."))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.refresh_table(focus=True)

    def action_search(self) -> None:
        self.focus_input_now(self.query_one("#filter", Input))

    def action_clear(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.refresh_table(focus=True)  # the new table takes the focus, not the filter box

    def action_sort(self, column: str | None = None) -> None:
        """Sort by `column` (a header click; again reverses), or without one (the `s` key: the
        table's cursor moves by rows) by the next column after the current sort column."""
        col, desc = self.sort_by
        if column is None:
            columns = self.all.columns
            if not columns:
                return
            column = columns[(columns.index(col) + 1) % len(columns)] if col in columns else columns[0]
        # numbers read best largest first; the target id smallest first
        self.sort_by = (column, not desc if column == col else column != "target")
        self.refresh_table(focus=True)

    def action_reverse(self) -> None:
        col, desc = self.sort_by
        self.sort_by = (col, not desc)
        self.refresh_table(focus=True)

    def on_frame_table_header_clicked(self, event: FrameTable.HeaderClicked) -> None:
        self.action_sort(event.column)

    def on_frame_table_row_chosen(self, event: FrameTable.RowChosen) -> None:
        self.dmdb_app.open_target(int(event.row["target"]))
