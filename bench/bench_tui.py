"""Latency of the TUI's main interactions, driven headless through Textual's Pilot.

    .venv/bin/python bench/bench_tui.py [--targets 10000] [--train 50000] [--density 0.02] [--demo PATH]

Two databases: a synthetic fit (default 10,000 targets x 50,000 train examples, ~2% dense, with
labels and 8x8 images; built once and cached under /tmp because it takes a while) and a small one
(200 train x 30 targets); --demo adds a database of yours (e.g. the one `dmdb demo` writes).
For each, the median over several repeats (after one warm-up, so the fit is in the weight cache) of:
  * open target detail: from the request until the target, its weights with pictures, the
    counterfactual and the nearest targets are all on screen;
  * change k: from the key press until the new counterfactual is on screen;
  * SQL query: from Enter until the result table is on screen (a GROUP BY over all weight rows).
"On screen" means: the first frame painted that shows it (checked on the composed frame's text).
Keys are posted as a terminal's driver posts them, without Pilot.press's idle waits (two
wait_for_idle calls, 40 ms or more, that a user never sees), and each frame is also encoded as the
escape sequences a truecolor terminal would receive, which headless Textual skips.
Each is printed against its aim (change k: 100 ms; open detail and SQL: 500 ms), as a ratio, with
the service call alone (no UI) beside it to show where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
from rich.console import Console
from textual import events
from textual._compositor import CompositorUpdate
from textual.widgets import Input, OptionList

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the analyses fixtures
os.environ.setdefault("DMDB_TUI_IMAGES", "halfcell")

import dmdb  # noqa: E402
from analyses_fixtures import insert_fit, new_db, sparse_random_W  # noqa: E402
from bench_analyses import build  # noqa: E402
from tui.app import DmdbApp  # noqa: E402
from tui.screens import OverviewScreen, SqlScreen, TargetDetailScreen  # noqa: E402
from tui.service import Service  # noqa: E402
from tui.widgets import FrameTable  # noqa: E402

SQL = "SELECT target, count(*) AS n, sum(weight) AS total FROM weights GROUP BY target ORDER BY total DESC LIMIT 100"
AIMS = {"open target detail": 0.5, "change k": 0.1, "SQL query": 0.5}


def big_db(n_train: int, n_targets: int, density: float) -> Path:
    """The synthetic study, cached: building 10M weight rows takes a while on a small machine."""
    path = Path(tempfile.gettempdir()) / f"dmdb_bench_tui_{n_targets}x{n_train}_{density}.duckdb"
    if path.exists():
        return path
    part = path.with_suffix(".partial")
    part.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with dmdb.open(part) as db:
        build(db, n_train, n_targets, density)
        exp = db.experiment("bench")
        rng = np.random.default_rng(1)
        exp.set_train_examples(labels=rng.integers(0, 10, n_train),
                               images=rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8))
        exp.set_targets(labels=rng.integers(0, 10, n_targets),
                        images=rng.integers(0, 256, (n_targets, 8, 8), dtype=np.uint8))
    part.rename(path)
    print(f"built {path} in {time.perf_counter() - t0:.0f} s")
    return path


def small_db() -> Path:
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    db, _ = new_db(tmp, "small.duckdb", n_train=200, n_targets=30, images=True, rng=rng)
    insert_fit(db, "e", sparse_random_W(rng, 200, 30, 0.2), rng.normal(0, 0.1, 30))
    db.close()
    return tmp / "small.duckdb"


class PaintedApp(DmdbApp):
    """The app, noting each frame it paints. Headless Textual composes every frame but writes none:
    here each is also encoded as the escape sequences a truecolor terminal would receive, so that
    cost counts too. `timed` stamps the first frame painted that passes its check."""

    CSS_PATH = Path(inspect.getfile(DmdbApp)).with_name(str(DmdbApp.CSS_PATH))

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.terminal = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor")
        self.cond: Callable[[], bool] | None = None
        self.stamp: float | None = None

    def _display(self, screen: Any, renderable: Any) -> None:
        super()._display(screen, renderable)
        if isinstance(renderable, CompositorUpdate):
            renderable.render_segments(self.terminal)
            if self.cond is not None and self.stamp is None:
                now = time.perf_counter()
                if self.cond():
                    self.stamp = now

    async def timed(self, act: Callable[[], None], cond: Callable[[], bool], timeout: float = 120.0) -> float:
        """Seconds from act() until a frame is painted that shows what cond() checks."""
        self.cond, self.stamp = cond, None
        t0 = time.perf_counter()
        act()
        while self.stamp is None:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("the app did not answer in time")
            await asyncio.sleep(0.005)
        self.cond = None
        return self.stamp - t0


def shows(app: DmdbApp, *texts: str) -> bool:
    """Whether the screen as composed now (what was just painted) contains every one of texts."""
    console = Console(width=app.size.width, file=io.StringIO(), record=True)
    console.print(app.screen._compositor.render_update(full=True))
    screen = console.export_text()
    return all(t in screen for t in texts)


def detail_drawn(app: DmdbApp, target: int) -> bool:
    """The detail of `target` is on screen: facts, first helpful example, counterfactual, neighbours."""
    screen = app.screen
    if not (isinstance(screen, TargetDetailScreen) and screen.target == target
            and screen.ready >= {"info", "cf", "nearest"}):
        return False
    pos = screen.weights.filter(pl.col("direction") == "positive").sort("rank")
    first = f"#{pos['train_idx'][0]} label" if pos.height else "(none)"
    nearest = screen.query_one("#nearest OptionList", OptionList)
    neighbour = str(nearest.get_option_at_index(0).prompt) if nearest.option_count else "neighbor  cosine"
    return shows(app, f"target {target} of ", first, f"remove the {screen.k} ", neighbour)


def counterfactual_drawn(app: DmdbApp, k: int) -> bool:
    screen = app.screen
    return (isinstance(screen, TargetDetailScreen) and "cf" in screen.ready and screen.cf is not None
            and screen.cf.k == k and shows(app, f"remove the {k} "))


def press(app: DmdbApp, key: str, char: str | None) -> Callable[[], None]:
    """A key as a terminal's driver delivers it (Pilot.press adds idle waits a user never sees)."""
    return lambda: app.post_message(events.Key(key, char))


async def measure_app(path: Path, targets: list[int], repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in AIMS}
    app = PaintedApp(path)
    async with app.run_test(size=(160, 50)) as pilot:
        await app.timed(lambda: None, lambda: isinstance(app.screen, OverviewScreen))
        for n, target in enumerate(targets):
            seconds = await app.timed(lambda: app.open_target(target), lambda: detail_drawn(app, target))
            if n:  # the first open loads the fit into the cache: not an interaction's latency
                times["open target detail"].append(seconds)
            for _ in range(repeat):
                k = app.screen.k + 1
                times["change k"].append(await app.timed(press(app, "plus", "+"),
                                                         lambda: counterfactual_drawn(app, k)))
            await pilot.press("escape")
        await pilot.press("5")
        await app.timed(lambda: None, lambda: isinstance(app.screen, SqlScreen))
        box = app.screen.query_one("#query", Input)
        result = app.screen.query_one("#result", FrameTable)
        for n in range(repeat + 1):
            box.focus()
            box.value = SQL
            before = result.table
            seconds = await app.timed(press(app, "enter", "\r"), lambda: result.table is not None
                                      and result.table is not before and shows(app, "row(s) x 3 column(s)"))
            if n:
                times["SQL query"].append(seconds)
    return times


def measure_service(path: Path, targets: list[int]) -> dict[str, float]:
    with Service.open(path) as svc:
        fit = svc.latest_fit()
        svc.targets(fit)

        def detail(t: int) -> None:
            info = svc.target_info(fit, t)
            top = svc.top_weights(fit, t, 8)
            svc.train_images(fit, top["train_idx"].to_list())
            svc.counterfactual(fit, t, 10, "top")
            svc.nearest(fit, t, 10)
            svc.runs_of_another(fit, t)  # as the detail screen's load_detail does
            assert info.target == t

        def med(fn: Callable[[], Any]) -> float:
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return statistics.median(ts)

        return {
            "open target detail": med(lambda: detail(targets[1])),
            "change k": med(lambda: svc.counterfactual(fit, targets[1], 11, "top")),
            "SQL query": med(lambda: svc.sql(SQL)),
        }


def report(name: str, path: Path, repeat: int) -> None:
    with Service.open(path) as svc:  # the fit the app browses: the latest
        fit = svc.latest_fit()
        ids = svc.sql(f"SELECT target FROM fit_targets WHERE fit_id = {fit}")[0]["target"].to_numpy()
        n_weights = svc.sql(f"SELECT count(*) AS n FROM weights WHERE fit_id = {fit}")[0]["n"][0]
    n_targets = len(ids)
    rng = np.random.default_rng(0)
    targets = [int(t) for t in rng.choice(ids, size=min(n_targets, repeat + 1), replace=False)]
    t0 = time.perf_counter()
    app_times = asyncio.run(measure_app(path, targets, repeat))
    wall = time.perf_counter() - t0
    svc = measure_service(path, targets)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{name}: fit {fit}, {n_targets:,} targets, {n_weights:,} weight rows ({wall:.0f} s for the app run; "
          f"load average {load} on {os.cpu_count()} CPUs: latencies grow with it)")
    print(f"  {'interaction':<20s} {'median':>9s} {'aim':>7s} {'median/aim':>11s} {'service only':>13s}   n")
    for key, aim in AIMS.items():
        med = statistics.median(app_times[key])
        verdict = "ok" if med <= aim else "OVER"
        print(f"  {key:<20s} {med * 1000:7.0f} ms {aim * 1000:5.0f} ms {med / aim:10.2f}x {svc[key] * 1000:10.0f} ms"
              f"   {len(app_times[key])}  {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=10_000)
    ap.add_argument("--train", type=int, default=50_000)
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--demo", type=Path, help="also measure this database (e.g. one written by `dmdb demo`)")
    args = ap.parse_args()
    report("small synthetic fit", small_db(), args.repeat)
    if args.demo:
        report(f"database {args.demo}", args.demo, args.repeat)
    report("large synthetic fit", big_db(args.train, args.targets, args.density), args.repeat)


if __name__ == "__main__":
    main()
