"""Widgets shared by the screens: a frame-backed table, an example's picture, a scatter plot."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import polars as pl
import polars.selectors as cs
from PIL import Image as PILImage
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.message import Message
from textual.widget import AwaitMount
from textual.widgets import Static
from textual_fastdatatable import ArrowBackend, DataTable
from textual_image.widget import HalfcellImage, Image as AutoImage  # importing queries the terminal: before the app starts
from textual_plotext import PlotextPlot

IMAGE_MODES = ("auto", "halfcell", "text")
SHADES = " .:-=+*#%@"


def image_mode() -> str:
    """How pictures are drawn: DMDB_TUI_IMAGES=auto (best the terminal supports: sixel, kitty,
    colour half cells), halfcell (colour text cells, works everywhere) or text (plain characters)."""
    mode = os.environ.get("DMDB_TUI_IMAGES", "auto")
    return mode if mode in IMAGE_MODES else "auto"


class FrameTable(Container):
    """A polars frame shown through textual-fastdatatable's Arrow backend (fast for large tables).

    `show` swaps in a new table; Enter on a row posts `RowChosen` with that row as a dict.
    """

    class RowChosen(Message):
        def __init__(self, table: "FrameTable", row: dict[str, Any]) -> None:
            super().__init__()
            self.table = table
            self.row = row

        @property
        def control(self) -> "FrameTable":
            return self.table

    class RowFocused(Message):
        def __init__(self, table: "FrameTable", row: dict[str, Any]) -> None:
            super().__init__()
            self.table = table
            self.row = row

        @property
        def control(self) -> "FrameTable":
            return self.table

    class HeaderClicked(Message):
        def __init__(self, table: "FrameTable", column: str) -> None:
            super().__init__()
            self.table = table
            self.column = column

        @property
        def control(self) -> "FrameTable":
            return self.table

    def __init__(self, *, id: str | None = None, classes: str | None = None, digits: int = 4) -> None:  # noqa: A002
        """digits: significant digits of each float column's largest value shown on screen."""
        super().__init__(id=id, classes=classes)
        self.frame: pl.DataFrame = pl.DataFrame()
        self.digits = digits
        self._table: DataTable | None = None

    def show(self, frame: pl.DataFrame) -> AwaitMount:
        """Replace the table with `frame` (floats rounded for display only; `self.frame` keeps them)."""
        self.frame = frame
        shown = frame.with_columns(round_column(frame[c], self.digits) for c in frame.select(cs.float()).columns)
        table = DataTable(backend=ArrowBackend(shown.to_arrow()), cursor_type="row", show_row_labels=False,
                          zebra_stripes=True, null_rep="·", render_markup=False, max_column_content_width=40)
        self.remove_children()
        self._table = table
        return self.mount(table)

    @property
    def table(self) -> DataTable | None:
        """The table showing the latest frame (the one `show` just mounted)."""
        return self._table

    @property
    def cursor_row(self) -> int:
        table = self.table
        return table.cursor_row if table is not None else 0

    @property
    def cursor_column(self) -> str | None:
        table = self.table
        if table is None or not self.frame.width:
            return None
        return self.frame.columns[min(table.cursor_column, self.frame.width - 1)]

    def current_row(self) -> dict[str, Any] | None:
        if self.frame.height == 0:
            return None
        return self.frame.row(min(self.cursor_row, self.frame.height - 1), named=True)

    def focus_table(self) -> None:
        if self._table is not None:
            self.call_after_refresh(self._table.focus)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if 0 <= event.cursor_row < self.frame.height:
            self.post_message(self.RowChosen(self, self.frame.row(event.cursor_row, named=True)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if 0 <= event.cursor_row < self.frame.height:
            self.post_message(self.RowFocused(self, self.frame.row(event.cursor_row, named=True)))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        if 0 <= event.column_index < self.frame.width:
            self.post_message(self.HeaderClicked(self, self.frame.columns[event.column_index]))


def round_column(col: pl.Series, digits: int) -> pl.Series:
    """Round a float column to `digits` significant digits of its largest value, so that every cell
    has the same decimals (the table sizes a numeric column from its extremes)."""
    top = col.abs().max()
    if top is None or not np.isfinite(top) or top == 0:
        return col
    return col.round(int(min(8, max(0, digits - 1 - np.floor(np.log10(top))))))


def to_pil(image: np.ndarray) -> PILImage.Image:
    """Any stored image (H,W), (H,W,C) or (C,H,W), integer or float, as an 8-bit PIL image."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255
        a = np.nan_to_num(a).astype(np.uint8)
    return PILImage.fromarray(a)


def shade_text(image: np.ndarray, width: int) -> Text:
    """The text fallback: a grayscale picture in characters of rising ink, `width` columns wide."""
    g = np.asarray(to_pil(image).convert("L"), dtype=np.float64)
    h = max(1, round(g.shape[0] * width / g.shape[1] / 2))  # a cell is about twice as tall as wide
    small = np.asarray(PILImage.fromarray(g.astype(np.uint8)).resize((width, h)), dtype=np.float64)
    idx = (small / 256 * len(SHADES)).astype(int).clip(0, len(SHADES) - 1)
    return Text("\n".join("".join(SHADES[i] for i in row) for row in idx))


class ExampleView(Vertical):
    """One example: its picture (terminal graphics, or characters), else its text, and a caption."""

    def __init__(self, image: np.ndarray | None, caption: str, text: str | None = None,
                 *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.image = image
        self.caption = caption
        self.text = text

    def compose(self) -> ComposeResult:
        mode = image_mode()
        if self.image is not None and mode != "text":
            cls = AutoImage if mode == "auto" else HalfcellImage
            yield cls(to_pil(self.image), classes="picture")
        elif self.image is not None:
            yield Static(shade_text(self.image, 16), classes="picture-text")
        elif self.text:
            yield Static(Text(self.text[:400]), classes="payload-text")
        yield Static(Text(self.caption), classes="caption")


class Scatter(PlotextPlot):
    """Targets on two embedding axes, coloured by cluster, with the highlighted target marked."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.points: pl.DataFrame = pl.DataFrame()
        self.marked: int | None = None

    def plot(self, points: pl.DataFrame, marked: int | None = None) -> None:
        """points: target, cluster (may be null), pc0, pc1."""
        self.points, self.marked = points, marked
        plt = self.plt
        plt.clear_data()
        plt.title("targets by datamodel embedding (pc0 x pc1)")
        if points.height:
            groups = points.partition_by("cluster", as_dict=True, maintain_order=True)
            for (cluster,), g in sorted(groups.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0)):
                label = "targets" if cluster is None else f"cluster {cluster}"
                plt.scatter(g["pc0"].to_list(), g["pc1"].to_list(), marker="dot", label=label)
            if marked is not None:
                m = points.filter(pl.col("target") == marked)
                if m.height:
                    plt.scatter(m["pc0"].to_list(), m["pc1"].to_list(), marker="X", color="red",
                                label=f"target {marked}")
        self.refresh()
