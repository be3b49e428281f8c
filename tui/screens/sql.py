"""SQL console: a query line with history, results in the Arrow-backed table."""

from __future__ import annotations

import time

import polars as pl
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Input, Static

from ..widgets import FrameTable, KeyFooter
from .base import DataScreen


class HistoryInput(Input):
    """An Input whose up/down keys walk a shared list of earlier entries."""

    BINDINGS = [Binding("up", "history(-1)", "Older", show=False), Binding("down", "history(1)", "Newer", show=False)]

    def __init__(self, history: list[str], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.history = history
        self.pos = len(history)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self.pos = max(0, min(len(self.history), self.pos + step))
        self.value = self.history[self.pos] if self.pos < len(self.history) else ""
        self.cursor_position = len(self.value)

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self.pos = len(self.history)


class SqlScreen(DataScreen):
    BINDINGS = [
        Binding("slash", "focus_query", "Query", show=True, priority=True),  # priority: see focus_input_now
        Binding("escape", "focus_result", "Results", show=True),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield HistoryInput(self.dmdb_app.sql_history, id="query",
                           placeholder="SQL, e.g. SELECT * FROM fit_overview (Enter runs, up/down: history)")
        yield Static("Tables: experiments, targets, train_examples, runs, fits, fit_targets, weights; "
                     "macros: top_weights, counterfactual, brittleness, verification, leakage_candidates ... "
                     "(fit := N; without it the latest fit, not necessarily the one browsed)",
                     id="status", classes="status")
        yield FrameTable(id="result", digits=None)  # query results as stored: rounding showed 3e-05 as 0
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#query").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        if not query:
            return
        self.query_one(HistoryInput).remember(query)
        self.fetch("result", self.timed_sql, query, waiting="running ... (Enter on another query stops this one)")

    def timed_sql(self, query: str) -> tuple[pl.DataFrame, int, float]:
        t0 = time.perf_counter()
        frame, n_statements = self.service.sql(query)
        return frame, n_statements, time.perf_counter() - t0

    def show_result(self, value: tuple[pl.DataFrame, int, float]) -> None:
        frame, n_statements, seconds = value
        self.query_one("#result", FrameTable).show(frame)
        last = f" (the last of {n_statements} statements; `dmdb sql` prints each)" if n_statements > 1 else ""
        shape = f"{frame.height} row(s) x {frame.width} column(s)" if frame.width else "done, no result (SET, CREATE, ...)"
        self.query_one("#status", Static).update(f"{shape} in {seconds * 1000:.0f} ms{last}")

    def fail(self, key: str, error: BaseException) -> None:
        """Say why, and clear the results: rows left from the query before would read as this one's."""
        self.query_one("#status", Static).update(Text(str(error), style="bold red"))
        self.query_one("#result", FrameTable).show(pl.DataFrame())

    def action_focus_query(self) -> None:
        self.focus_input_now(self.query_one("#query", Input))

    def action_focus_result(self) -> None:
        """Leave the query line for the results (or for nothing, before any), so that the screen
        keys 1-5, q and ? work again."""
        result = self.query_one("#result", FrameTable)
        if result.table is None:
            self.set_focus(None)
        else:
            result.focus_table()
