"""The help screen: every screen and key in one place."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# dmdb TUI

Browse a datamodels database read-only. Every screen's keys are in the footer;
**ctrl+p** opens the command palette (type a target id to open it).

| key | screen |
|---|---|
| `1` | **Overview**: experiments, runs by role, fits (Enter on a fit browses it) |
| `2` | **Targets**: every target of the fit; Enter opens its detail |
| `3` | **Leakage**: (target, train example) pairs whose weight stands out |
| `4` | **Embeddings**: targets on the first two principal components |
| `5` | **SQL**: run SQL against the database (read-only) |
| `?` | this help (`escape`, `q` or `?` closes it); `q` quits (outside text fields and this help; ctrl+q anywhere) |
| `ctrl+g` | stops what the database is reading (a long query or leakage search); a screen waiting for it names it |

**Targets**: `/` filter (a target id, or a condition such as `label = 3 and support < 20`),
`s` sort by the next column, `r` reverse, `escape` clears the filter; click a header to sort by it
(again: reverse).

**Target detail**: the target, its most helpful and most harmful train examples with their weights,
the counterfactual panel (`+`/`-` change k, type k and Enter, `m` cycles top / bottom / random), and
its nearest targets (`n` moves to them, Enter opens one). `escape` goes back; the key of the screen
it was opened from (`2` from Targets) returns to that list at once. Browsing another fit
(Overview) shows the same target under that fit when you come back.

**SQL**: Enter runs the query (and stops one still running); up/down walk the history; `escape`
leaves the query line for the results (so that `1`-`5`, `q` and `?` work again), `/` goes back to it.

A counterfactual removes k train examples: *top* the largest positive weights, *bottom* the most
negative, *random* k drawn with seed 0. Predicted margin = base margin - sum of the removed weights;
it *flips* when its sign differs from the base margin's. "Verified" shows the mean margin of the
retraining runs recorded for that removal (role 'counterfactual'), when there are any.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
