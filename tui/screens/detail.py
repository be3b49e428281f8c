"""Target detail: the target, its strongest train examples, a counterfactual panel, its neighbours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.timer import Timer
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Header, Input, Label, Static

from ..service import Counterfactual, RunsOfAnother, TargetInfo
from ..pictures import Example, Gallery, gallery, predraw, WIDE_CARD
from ..widgets import KeyFooter, RowList
from .base import DataScreen

MODES = ("top", "bottom", "random")
N_EXAMPLES = 8
REVEAL_AFTER = 0.25  # seconds
GALLERY_COLUMNS = 4
K_DEFAULT = 10


def margin_word(m: float) -> str:
    return "correct" if m >= 0 else "wrong"


def describe_counterfactual(cf: Counterfactual, another: RunsOfAnother | None = None) -> str:
    """The panel's text; numbers printed with 4 decimals (tests compare them with the API's).
    `another`: the runs another fit planned, shown below the panel when this fit planned none."""
    what = {"top": "most helpful", "bottom": "most harmful", "random": "random"}[cf.mode]
    lines = [
        f"remove the {cf.k} {what} train examples ({cf.n_removed} removed)",
        f"base margin       {cf.base_margin:+.4f}  ({margin_word(cf.base_margin)})",
        f"predicted margin  {cf.predicted_margin:+.4f}  ({margin_word(cf.predicted_margin)}),"
        f" change {cf.predicted_change:+.4f}",
        "[b $error]the prediction FLIPS[/]" if cf.flips else "[b $success]the prediction stays[/]",
    ]
    v = cf.verified
    if v is None and another is not None:  # "no runs recorded" would deny the block just below
        lines.append(f"[dim]not verified: fit {another.fit_id} planned no retraining of its own; "
                     f"fit {another.runs_of}'s retrained runs are below[/dim]")
    elif v is None:
        lines.append("[dim]not verified: no retraining runs recorded for this removal[/dim]")
    else:
        base = "" if v.baseline_margin is None else f" (full train set: {v.baseline_margin:+.4f})"
        flipped = (v.mean_margin < 0) != ((v.baseline_margin if v.baseline_margin is not None else cf.base_margin) < 0)
        outcome = "flipped" if flipped else "did not flip"
        if v.baseline_margin is not None and (v.baseline_margin < 0) != (cf.base_margin < 0):
            # else "the prediction FLIPS ... did not flip" reads as a failed prediction
            outcome += f" (already {margin_word(v.baseline_margin)} on the full set)"
        lines += [f"verified by {v.n_runs} retraining run(s) without them:",
                  f"  mean margin {v.mean_margin:+.4f}{base}", f"  -> {outcome}"]
    return "\n".join(lines)


def describe_runs_of_another(r: RunsOfAnother) -> str:
    """The panel's block on the runs another fit planned, with this fit's predictions (4 decimals)."""
    lines = [f"[b]retrained runs planned by fit {r.runs_of} ({escape(r.estimator)}), "
             f"with fit {r.fit_id}'s predictions[/b]"]
    if r.verification is None:
        return "\n".join([*lines, escape(f"none: {r.error}")])
    rows = r.rows
    if rows.is_empty():
        covered = r.covered()
        shown = ", ".join(map(str, covered[:12])) + (", ..." if len(covered) > 12 else "")
        lines.append(f"none for target {r.target}: they retrained for target(s) {shown} (ctrl+p opens one)")
    for row in rows.iter_rows(named=True):
        removal = f"top {row['k']}" if row["mode"] == "top" else f"{row['mode']} {row['k']}"
        what = "brittleness support" if row["purpose"] == "brittleness" else removal
        lines += [f"fit {r.runs_of}'s {what} ({row['n_removed']} removed, {row['seeds']} seed(s))",
                  f"  predicted change {row['predicted_change']:+.4f}", f"  actual change    {row['actual_change']:+.4f}"]
        if row["purpose"] == "brittleness":
            predicted = row["predicted_base"] >= 0 > row["predicted_margin"]
            if row["actual_base"] < 0:
                outcome = "already wrong on the full set"
            else:
                outcome = "flipped" if row["actual_margin"] < 0 else "did not flip"
            lines.append(f"  -> {outcome}; fit {r.fit_id} predicted {'a flip' if predicted else 'no flip'}")
    v = r.verification
    n = v.rows.filter(pl.col("purpose") == "counterfactual").height
    rho, pearson = ("n/a" if x is None else f"{x:.4f}" for x in (v.spearman, v.pearson))
    lines.append(f"over all {n} removal(s): Spearman {rho}, Pearson {pearson}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Detail:
    """Everything the screen shows about one target, fetched together."""

    info: TargetInfo
    top: pl.DataFrame
    images: dict[int, np.ndarray | None]
    cf: Counterfactual
    nearest: pl.DataFrame
    runs_of_another: RunsOfAnother | None


class KInput(Input):
    """The k box: digits only; the panel's keys (+, -, m) work while it has the focus."""

    BINDINGS = [
        Binding("plus,equals_sign", "screen.k(1)", "k+1", show=False, priority=True),
        Binding("minus", "screen.k(-1)", "k-1", show=False, priority=True),
        Binding("m", "screen.mode", "Mode", show=False, priority=True),
    ]


class TargetDetailScreen(DataScreen):
    """One target's detail. Composed once (the app keeps one per mode) and filled in place for each
    target shown: composing and mounting its ~60 widgets anew took most of a second. Nearest targets
    open in the same screen; Escape walks back through them, then leaves."""

    STATUS = "#facts"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("plus,equals_sign", "k(1)", "k+1"),
        Binding("minus", "k(-1)", "k-1"),
        Binding("m", "mode", "Mode"),
        Binding("n", "nearest", "Nearest"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.target = -1
        self.fit = -1
        self.trail: list[int] = []
        self.k = K_DEFAULT
        self.mode = "top"
        self.cf: Counterfactual | None = None
        self.another: RunsOfAnother | None = None  # another fit's retrained runs, when this fit planned none
        self.weights: pl.DataFrame = pl.DataFrame()
        self.ready: set[str] = set()
        self._reveal: Timer | None = None
        self._reveal_mode = ""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="detail"):
            with VerticalScroll(id="detail-left"):
                with Horizontal(id="target-box"):
                    yield gallery(1, 1, WIDE_CARD, id="target-picture")
                    yield Static("loading ...", id="facts")
                yield Label(f"Most helpful: largest positive weights (top {N_EXAMPLES})", classes="section")
                yield gallery(GALLERY_COLUMNS, N_EXAMPLES, id="positive")
                yield Label(f"Most harmful: most negative weights (top {N_EXAMPLES})", classes="section")
                yield gallery(GALLERY_COLUMNS, N_EXAMPLES, id="negative")
            with Vertical(id="detail-right"):
                yield Label("Counterfactual", classes="section")
                with Horizontal(id="cf-controls"):
                    yield Label("k ")
                    yield KInput(str(self.k), id="k", restrict=r"[0-9]*")
                    yield Static(id="mode")
                yield Static(id="cf")
                yield Static(id="cf-runs")
                yield Label("Nearest targets by datamodel similarity (Enter opens)", classes="section")
                yield RowList(id="nearest")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.load()

    def open(self, target: int, fit: int) -> None:
        """Show `target` from another screen. Once composed, this screen appears when its data is
        in (one paint, not a loading screen and then another), or after REVEAL_AFTER if slower."""
        self.show_target(target, fit, [])
        if not self.is_mounted:
            self.app.push_screen(self)  # first use: composing takes a while anyway
            return
        if self._reveal is not None:
            self._reveal.stop()
        self._reveal = self.set_timer(REVEAL_AFTER, self.reveal)
        self._reveal_mode = self.app.current_mode

    def fail(self, key: str, error: BaseException) -> None:
        """Say so; a screen waiting to appear stays away (the message says why), one showing goes
        back to the target before, or away when there is none (e.g. a mistyped target id)."""
        super().fail(key, error)
        if key == "detail":
            self.query_one("#facts", Static).update(f"could not load target {self.target}")
            if self._reveal is not None:
                self._reveal.stop()
                self._reveal = None
            elif self.app.screen is self:
                self.action_back()
        elif key == "cf":  # else the panel goes on showing the numbers of the k before
            self.cf = None
            self.query_one("#cf", Static).update(Text(f"no counterfactual for k {self.k}, {self.mode}: {error}"),
                                                 layout=False)

    def reveal(self) -> None:
        """Push this screen, if an `open` is waiting for it and the user stayed in that mode."""
        if self._reveal is None:
            return
        self._reveal.stop()
        self._reveal = None
        if self.app.current_mode == self._reveal_mode and self not in self.app.screen_stack:
            self.app.push_screen(self)

    def show_target(self, target: int, fit: int, trail: list[int]) -> None:
        """Show `target` of `fit`, with k and mode reset; `trail`: the targets Escape goes back to."""
        self.target, self.fit, self.trail = target, fit, trail
        if self.is_mounted:  # else on_mount loads it
            self.load()

    def load(self) -> None:
        """Reset the panels and fetch everything in one worker: one repaint when it arrives (the
        database calls take a lock in turn anyway, and each partial repaint of this screen costs)."""
        target, fit = self.target, self.fit
        self.k, self.mode, self.cf, self.another, self.weights = K_DEFAULT, "top", None, None, pl.DataFrame()
        self.ready.clear()
        self.title = f"target {target}"
        self.sub_title = f"fit {fit}"
        for view in self.query(Gallery):
            view.show([], "" if view.id == "target-picture" else "loading ...")
        self.query_one("#k", Input).value = str(self.k)
        self.query_one("#cf-runs", Static).display = False
        self.show_mode()
        self.fetch("detail", self.load_detail, fit, target, self.k, self.mode, waiting=f"loading target {target} ...")

    def reload(self) -> None:
        """Follow the browsed fit (another fit was chosen while this screen waited under another mode):
        the same target under that fit, to compare them; a fit without the target goes back."""
        if self.fit_id is not None and self.fit not in (-1, self.fit_id):
            self.show_target(self.target, self.fit_id, self.trail)

    def load_detail(self, fit: int, target: int, k: int, mode: str) -> Detail:
        svc = self.service
        info = svc.target_info(fit, target)
        top = svc.top_weights(fit, target, N_EXAMPLES)
        images = svc.train_images(fit, top["train_idx"].to_list())
        predraw([info.image, *images.values()])
        return Detail(info, top, images, svc.counterfactual(fit, target, k, mode), svc.nearest(fit, target, 10),
                      svc.runs_of_another(fit, target))

    def show_detail(self, detail: Detail) -> None:
        info, top = detail.info, detail.top
        if info.target != self.target:
            return  # a target shown before this one
        self.weights = top
        cap = f"target {info.target}" + ("" if info.label is None else f"  label {info.label}")
        self.query_one("#target-picture", Gallery).show([Example(info.image, cap, info.text)])
        rho = "n/a" if info.holdout_spearman is None else f"{info.holdout_spearman:.3f}"
        if info.support is None:
            support = "never (removing every helpful example is not enough)"
        elif info.support == 0:
            support = "0 (already predicted wrong)"
        else:
            support = str(info.support)
        self.query_one("#facts", Static).update(
            f"[b]target {info.target}[/b] of {info.experiment}, fit {info.fit_id}\n"
            f"label: {'(none)' if info.label is None else info.label}\n"
            f"predicted margin (full train set): {info.base_margin:+.4f} ({margin_word(info.base_margin)})\n"
            f"holdout Spearman: {rho}\nnonzero weights: {info.nnz}\n"
            f"brittleness support: {support}"
        )
        for direction in ("positive", "negative"):
            rows = top.filter(pl.col("direction") == direction).sort("rank")
            self.query_one(f"#{direction}", Gallery).show([
                Example(detail.images.get(r["train_idx"]),
                        f"#{r['train_idx']}" + ("" if r["label"] is None else f" label {r['label']}") + f"\nw {r['weight']:+.4f}")
                for r in rows.iter_rows(named=True)
            ], "(none)")
        self.ready.add("info")
        self.another = detail.runs_of_another
        self.show_cf(detail.cf)
        runs = self.query_one("#cf-runs", Static)
        runs.display = self.another is not None
        if self.another is not None:
            runs.update(describe_runs_of_another(self.another))
        self.query_one("#nearest", RowList).show(detail.nearest)
        self.ready.add("nearest")
        self.reveal()

    def show_mode(self) -> None:
        self.query_one("#mode", Static).update(f"mode [b]{self.mode}[/b]", layout=False)  # the footer says m

    def update_counterfactual(self) -> None:
        self.show_mode()
        self.ready.discard("cf")
        self.fetch("cf", self.service.counterfactual, self.fit, self.target, self.k, self.mode)

    def show_cf(self, cf: Counterfactual) -> None:
        if (cf.target, cf.k, cf.mode) != (self.target, self.k, self.mode):
            return  # asked for before the latest change
        self.cf = cf
        self.query_one("#cf", Static).update(describe_counterfactual(cf, self.another), layout=False)
        self.ready.add("cf")

    def set_k(self, k: int) -> None:
        self.k = max(0, k)
        k_input = self.query_one("#k", Input)
        if k_input.value != str(self.k):
            k_input.value = str(self.k)
        self.update_counterfactual()

    def action_k(self, step: int) -> None:
        self.set_k(self.k + step)

    def action_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        self.update_counterfactual()

    def action_nearest(self) -> None:
        self.query_one("#nearest", RowList).focus_list()

    def action_back(self) -> None:
        if self.trail:
            self.show_target(self.trail[-1], self.fit, self.trail[:-1])
        else:
            self.app.pop_screen()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "k":
            return
        if event.value.strip().isdecimal():
            self.set_k(int(event.value))
            self.query_one("#nearest", RowList).focus_list()
        else:  # the box would go on showing a k the panel is not for
            self.notify(f"k must be a whole number >= 0, not {event.value.strip()!r}", severity="warning")
            event.input.value = str(self.k)

    def on_row_list_row_chosen(self, event: RowList.RowChosen) -> None:
        self.show_target(int(event.row["neighbor"]), self.fit, [*self.trail, self.target])
