"""Embeddings: targets on the first two principal components of their weight vectors."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Header, Static

from ..service import Embedding
from ..widgets import FrameTable, KeyFooter, Scatter
from .base import DataScreen


class EmbeddingsScreen(DataScreen):
    """A scatter of (pc0, pc1) coloured by cluster beside the targets' table; the highlighted
    target is marked on the plot, Enter opens it."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="status", classes="status")
        with Horizontal(id="embeddings"):
            yield Scatter(id="scatter")
            yield FrameTable(id="points")
        yield KeyFooter()

    def reload(self) -> None:
        self.fetch_for_fit("points", self.service.embedding, "computing the embedding ...")

    def show_points(self, value: Embedding) -> None:
        points = value.points
        self.query_one("#status", Static).update(
            f"fit {self.fit_id}: {points.height} targets; {value.source}. Sorted by pc0; Enter opens a target."
        )
        self.query_one(Scatter).plot(points, explained=value.explained)
        table = self.query_one("#points", FrameTable)
        table.show(points.sort("pc0", descending=True))
        table.focus_table()

    def on_frame_table_row_focused(self, event: FrameTable.RowFocused) -> None:
        scatter = self.query_one(Scatter)
        scatter.plot(scatter.points, marked=int(event.row["target"]))

    def on_frame_table_row_chosen(self, event: FrameTable.RowChosen) -> None:
        self.dmdb_app.open_target(int(event.row["target"]))
