"""Leakage: (target, train example) pairs whose weight stands far above the target's others."""

from __future__ import annotations

from typing import Any

import polars as pl
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Header, Static

from ..pictures import Example, Gallery, gallery, WIDE_CARD
from ..widgets import FrameTable, KeyFooter
from .base import DataScreen


class LeakageScreen(DataScreen):
    """Ranked candidates (dmdb.analyses.leakage); the highlighted pair's pictures side by side."""

    pair: tuple[int, int] | None = None
    """The (target, train_idx) whose pictures are shown."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="status", classes="status")
        yield FrameTable(id="candidates")
        with Horizontal(id="pair"):
            yield gallery(1, 1, WIDE_CARD, id="pair-target")
            yield gallery(1, 1, WIDE_CARD, id="pair-train")
        yield KeyFooter()

    def reload(self) -> None:
        self.fetch_for_fit("candidates", self.service.leakage, "finding leakage candidates ...")

    def show_candidates(self, found: tuple[pl.DataFrame, int]) -> None:
        frame, total = found
        self.query_one("#candidates", FrameTable).show(frame)
        if frame.height == 0:  # no row to focus, so nothing replaces the pictures of another fit's pair
            for view in self.query(Gallery):
                view.show([])
            self.pair = None
        if total == 0:  # not "0 candidate pair(s) ..., most extreme first. ... Enter opens the target."
            text = f"fit {self.fit_id}: no (target, train example) weight stands out (robust z >= 6): no leakage candidates."
        else:
            shown = f"{total:,}" if total == frame.height else f"{total:,} (the {frame.height:,} most extreme shown)"
            text = (f"fit {self.fit_id}: {shown} candidate pair(s) with robust z >= 6, most extreme first. "
                    "pixel_dist 0 = identical pixels. Enter opens the target.")
        self.query_one("#status", Static).update(text)
        self.query_one("#candidates", FrameTable).focus_table()

    def on_frame_table_row_focused(self, event: FrameTable.RowFocused) -> None:
        t, i = int(event.row["target"]), int(event.row["train_idx"])
        self.fetch("pair", self.load_pair, t, i)

    def load_pair(self, target: int, train_idx: int) -> tuple[int, int, Any, Any]:
        assert self.fit_id is not None
        info = self.service.target_info(self.fit_id, target)
        return target, train_idx, info.image, self.service.train_images(self.fit_id, [train_idx])[train_idx]

    def show_pair(self, value: tuple[int, int, Any, Any]) -> None:
        target, train_idx, timg, eimg = value
        self.query_one("#pair-target", Gallery).show([Example(timg, f"target {target}")])
        self.query_one("#pair-train", Gallery).show([Example(eimg, f"train #{train_idx}")])
        self.pair = target, train_idx

    def on_frame_table_row_chosen(self, event: FrameTable.RowChosen) -> None:
        self.dmdb_app.open_target(int(event.row["target"]))
