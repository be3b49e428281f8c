"""`dmdb demo`: real training on the digits, fits, verification, and a summary worth reading."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..demo.kinds import KINDS
from .argtypes import at_least
from .output import STDOUT
from .progress import stage_progress

if TYPE_CHECKING:
    from ..demo.pipeline import DemoResult


def register(sub: Any, parents: tuple[argparse.ArgumentParser, argparse.ArgumentParser]) -> None:
    common, _ = parents
    p = sub.add_parser(
        "demo", parents=[common],
        help="train thousands of small models on scikit-learn's digits, fit datamodels, verify them, summarise",
    )
    p.add_argument("--runs", type=at_least(10), help="fit runs to train (default 1000; 300 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smaller study (300 fit and 80 holdout runs; what the tests run)")
    p.add_argument("--model", choices=KINDS, default="linear", help="linear softmax (default) or a 1-hidden-layer MLP")
    p.add_argument("--threads", type=at_least(1), help="torch threads for training (default: torch's choice)")
    p.set_defaults(func=cmd_demo)


def ascii_image(img: np.ndarray | None) -> Text:
    """A grey image in half-block characters (two pixel rows per line), so the summary shows the digit."""
    if img is None:
        return Text("(no image)")
    a = np.asarray(img, dtype=np.float64)
    a = np.round(255 * (a - a.min()) / (np.ptp(a) or 1.0)).astype(int)
    if a.shape[0] % 2:
        a = np.vstack([a, np.zeros((1, a.shape[1]), dtype=int)])
    text = Text()
    for top, bottom in zip(a[0::2], a[1::2]):
        for u, d in zip(top, bottom):
            text.append("\u2580", style=f"rgb({u},{u},{u}) on rgb({d},{d},{d})")
        text.append("\n")
    text.rstrip()
    return text


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def summary(r: DemoResult, seconds: float) -> Group:
    parts: list[Any] = []
    head = Table.grid(padding=(0, 2))
    head.add_row("experiment", f"{r.experiment}: {r.n_train} train images x {r.n_targets} test targets (8x8 digits)")
    head.add_row("runs", ", ".join(f"{n} {role}" for role, n in sorted(r.runs.items())) + f" ({r.trained} fit/holdout and {r.retrained} counterfactual trained now)")
    head.add_row("accuracy", f"{_fmt(r.accuracy)} mean test accuracy of the {r.model} models on half the train set")
    head.add_row("time", f"{seconds:.0f} s")
    parts.append(Panel(head, title="dmdb demo", border_style="cyan"))

    fits = Table(title="datamodels (LDS: Spearman of predicted vs actual margins on holdout runs, mean over targets)")
    for c in ("fit", "estimator", "LDS", "fit + val runs", "seconds"):
        fits.add_column(c, justify="right" if c != "estimator" else "left")
    for f in r.fits:
        fits.add_row(str(f.fit_id), f.estimator, _fmt(f.lds), f"{f.n_fit_runs} + {f.n_val_runs}", f"{f.seconds:.1f}")
    parts.append(fits)

    if r.curve.height:
        curve = Table(title="learning curve of the lasso: LDS against fit runs")
        curve.add_column("fit runs", justify="right")
        curve.add_column("LDS", justify="right")
        curve.add_column("", justify="left")
        for row in r.curve.iter_rows(named=True):
            lds = row["lds"]
            curve.add_row(str(row["n_fit_runs"]), _fmt(lds), "#" * int(40 * max(lds or 0, 0)))
        parts.append(curve)

    if r.brittle.height:
        br = Table(title="most brittle test images: removing their k most helpful train images is predicted to flip them")
        for c in ("image", "target", "label", "k", "predicted margin", "after removing k"):
            br.add_column(c, justify="right" if c != "image" else "left")
        for row in r.brittle.iter_rows(named=True):
            br.add_row(ascii_image(r.images.get(row["target"])), str(row["target"]), str(row["label"]),
                       str(row["support"]), f"{row['base_margin']:.2f}", f"{row['margin_after']:.2f}")
        parts.append(br)

    v = r.verification
    if v.rows.height:
        cf = v.rows.filter(v.rows["purpose"] == "counterfactual").sort("k", descending=True)
        if cf.height:
            ex = cf.row(0, named=True)
            t = Table.grid(padding=(0, 2))
            t.add_row(ascii_image(r.images.get(ex["target"])), Text(
                f"target {ex['target']}: remove its {ex['k']} train images with the largest positive weights\n"
                f"predicted margin {ex['predicted_base']:.2f} -> {ex['predicted_margin']:.2f} "
                f"(change {ex['predicted_change']:+.2f})\n"
                f"actual (retrained, {ex['seeds']} seeds) {ex['actual_base']:.2f} -> {ex['actual_margin']:.2f} "
                f"(change {ex['actual_change']:+.2f})"
            ))
            parts.append(Panel(t, title="one counterfactual, checked by retraining", border_style="green"))
        parts.append(Text(
            f"counterfactuals: Spearman of predicted vs actual margin change over {cf.height} (target, k) pairs: "
            f"{_fmt(v.spearman)} (lasso), {_fmt(r.dm_verification.spearman)} (difference in means, same runs)\n"
            f"brittleness: removing the estimated support flipped {v.brittle_flipped} of the "
            f"{v.brittle_tested - v.brittle_already_wrong} retrained predictions that models trained on the full "
            "train set got right"
            + (f" ({v.brittle_already_wrong} of the {v.brittle_tested} tested were wrong there already)"
               if v.brittle_already_wrong else "")
        ))
    parts.append(Text.assemble(
        ("\nexplore it: ", "bold"), (f"dmdb tui {r.db_path}", "bold green"),
        ("   or: ", "bold"), (f"dmdb fits --db {r.db_path}", "green"), ("   or: ", "bold"),
        (f"dmdb sql --db {r.db_path} \"SELECT * FROM top_weights(fit := {r.fits[0].fit_id}, target := 0, k := 10)\"",
         "green"), ("   (the same SQL works in the DuckDB shell)", ""),
    ))
    return Group(*parts)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo.pipeline import DemoConfig, run_demo  # loads torch: only when the demo runs

    cfg = replace(DemoConfig.quick() if args.quick else DemoConfig(), model=args.model, threads=args.threads)
    if args.runs is not None:
        cfg = replace(cfg, fit_runs=args.runs)
    t0 = time.perf_counter()
    with stage_progress(args.quiet) as bar:
        result = run_demo(args.db, cfg, progress=bar)
    STDOUT.print(summary(result, time.perf_counter() - t0))
    return 0
