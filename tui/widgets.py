"""Widgets shared by the screens: a frame-backed table, a short list of rows, the footer, a scatter plot
(pictures: tui.pictures)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import polars as pl
import polars.selectors as cs
from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.message import Message
from textual.widget import AwaitMount
from textual.screen import Screen
from textual.widgets import Footer, Label, OptionList, Static
from textual_fastdatatable import ArrowBackend, DataTable
from textual_plotext import PlotextPlot

from dmdb.analyses import variance_shares


NULL = "·"  # how a missing value is shown
SHORT_ROWS = 10  # rows a FrameTable of class "short" shows at most


class _TableMessage(Message):
    """A message from a FrameTable; `control` lets handlers filter with @on(..., selector)."""

    def __init__(self, table: "FrameTable") -> None:
        super().__init__()
        self.table = table

    @property
    def control(self) -> "FrameTable":
        return self.table


class _RowMessage(_TableMessage):
    def __init__(self, table: "FrameTable", row: dict[str, Any]) -> None:
        super().__init__(table)
        self.row = row


class FrameTable(Container):
    """A polars frame shown through textual-fastdatatable's Arrow backend (fast for large tables).

    `show` swaps in a new table; Enter on a row posts `RowChosen` with that row as a dict.
    Class "short": as tall as its rows, at most SHORT_ROWS.
    """

    class RowChosen(_RowMessage):
        """Enter on a row."""

    class RowFocused(_RowMessage):
        """The cursor moved to a row."""

    class HeaderClicked(_TableMessage):
        def __init__(self, table: "FrameTable", column: str) -> None:
            super().__init__(table)
            self.column = column

    def __init__(self, *, id: str | None = None, classes: str | None = None, digits: int | None = 4) -> None:  # noqa: A002
        """digits: significant digits of each float column's largest value shown on screen; None: as stored."""
        super().__init__(id=id, classes=classes)
        self.frame: pl.DataFrame = pl.DataFrame()
        self.digits = digits
        self._table: DataTable | None = None

    def show(self, frame: pl.DataFrame) -> AwaitMount:
        """Replace the table with `frame` (floats rounded for display only; `self.frame` keeps them)."""
        self.frame = frame
        shown = frame if self.digits is None else rounded(frame, self.digits)
        table = DataTable(backend=ArrowBackend(shown.to_arrow()), cursor_type="row", column_widths=float_widths(shown),
                          show_row_labels=False, zebra_stripes=True, null_rep=NULL, render_markup=False,
                          max_column_content_width=40)
        if self.has_class("short"):
            # As tall as its rows: set here, since an auto height follows the table's virtual size,
            # computed once mounted, and that re-layout was seen to be lost (the table stayed 0 high).
            rows = min(SHORT_ROWS, frame.height) + 1
            table.styles.height = rows
            # a horizontal scrollbar (a narrow terminal) takes a line: one more, or it hid the last row
            self.watch(table, "show_horizontal_scrollbar", lambda shown: setattr(table.styles, "height", rows + shown))
        old = self._table
        if old is not None and old.has_focus:
            # hold the focus here while the tables are swapped: removing the focused table would
            # pass it on to the next widget (a filter box), which would then eat the next keys
            self.can_focus = True
            self.focus(scroll_visible=False)
            self.call_after_refresh(self._hand_focus, table)
        self.remove_children()
        self._table = table
        return self.mount(table)

    def _hand_focus(self, table: DataTable) -> None:
        if self.has_focus and table is self._table:
            table.focus()
        self.can_focus = False

    @property
    def table(self) -> DataTable | None:
        """The table showing the latest frame (the one `show` just mounted)."""
        return self._table

    def focus_table(self, then: Callable[[], object] | None = None) -> None:
        """Focus the current table once it is drawn; `then` runs after the focus has moved."""
        table = self._table
        if table is None:
            return

        def focus() -> None:
            table.focus()  # moves focus through call_later: `then`, queued after it, runs later
            if then is not None:
                self.app.call_later(then)

        self.call_after_refresh(focus)

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


class RowList(Vertical):
    """A short frame as aligned rows of text under a header line, with a cursor: refilled in place,
    where a FrameTable mounts a new table widget for each frame, which costs a screen that changes
    its list with every target. Enter on a row posts `RowChosen` with that row as a dict."""

    DEFAULT_CSS = """
    RowList { height: auto; }
    RowList > .header { height: 1; padding: 0 1; text-style: bold; }
    RowList > OptionList { height: auto; border: none; padding: 0 1; }
    """

    class RowChosen(Message):
        """Enter on a row."""

        def __init__(self, rows: "RowList", row: dict[str, Any]) -> None:
            super().__init__()
            self.rows = rows
            self.row = row

        @property
        def control(self) -> "RowList":
            return self.rows

    def __init__(self, *, id: str | None = None, digits: int = 4) -> None:  # noqa: A002
        super().__init__(id=id)
        self.frame: pl.DataFrame = pl.DataFrame()
        self.digits = digits

    def compose(self) -> ComposeResult:
        yield Static(classes="header")
        yield OptionList()

    def show(self, frame: pl.DataFrame) -> None:
        """Show `frame` (floats rounded for display only; `self.frame` keeps them), cursor on row 0."""
        self.frame = frame
        shown = rounded(frame, self.digits)
        cells = [[NULL if v is None else str(v) for v in shown[c].to_list()] for c in shown.columns]
        widths = [max([len(name), *map(len, col)]) for name, col in zip(shown.columns, cells)]
        self.query_one(".header", Static).update("  ".join(n.rjust(w) for n, w in zip(shown.columns, widths)),
                                                 layout=False)
        rows = self.query_one(OptionList)
        rows.set_options(Text("  ".join(col[i].rjust(w) for col, w in zip(cells, widths)))
                         for i in range(frame.height))
        rows.highlighted = 0 if frame.height else None

    def focus_list(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.RowChosen(self, self.frame.row(event.option_index, named=True)))


class KeyFooter(Footer):
    """Textual's Footer, rebuilding its keys at most once per refresh and only when they changed:
    the stock one rebuilds (mounting a widget per key) on every binding change, and a detail
    screen's focus moves and each return to a kept screen make dozens of those."""

    _pending = False
    _drawn: list[tuple[str, Binding, bool, str]] | None = None
    PALETTE_CELLS = 14
    """What the palette key takes at the right of a full footer."""

    def full_width(self, screen: Screen) -> int:
        """Cells the full footer needs on `screen`: ' key description ' for each action's first key
        (as Footer draws them), and the palette key."""
        shown: dict[str, Binding] = {}
        for _, binding, _, _ in screen.active_bindings.values():
            if binding.show:
                shown.setdefault(binding.action, binding)
        return self.PALETTE_CELLS + sum(cell_len(self.app.get_key_display(b)) + cell_len(b.description) + 3
                                        for b in shown.values())

    def set_narrow(self, screen: Screen) -> bool:
        """Compact (less padding, no palette key, the screen keys 1-5 as one '1-5 screens') where the
        full footer does not fit: at 80 columns the Targets footer ended at '3 Leaka', and at 120 the
        detail's before '? Help'. Whether that changed."""
        narrow = self.full_width(screen) > self.app.size.width
        if narrow == self.compact:
            return False
        self.compact = narrow
        self.show_command_palette = not narrow
        return True

    async def on_resize(self) -> None:
        if self.set_narrow(self.screen):
            await self.recompose()

    def compose(self) -> ComposeResult:
        if not self.compact:
            yield from super().compose()
            return
        for widget in super().compose():  # FooterKey widgets (a private class) carry their action
            action = getattr(widget, "action", "")
            if action.startswith("show("):
                continue
            if action == "help":
                yield Label(" 1-5 screens ", classes="footer-note")
            yield widget

    def bindings_changed(self, screen: Screen) -> None:
        if not self._pending:
            self._pending = True
            self.call_after_refresh(self._rebuild, screen)

    def _rebuild(self, screen: Screen) -> None:
        self._pending = False
        keys = [(key, binding, enabled, tooltip) for key, (_, binding, enabled, tooltip) in screen.active_bindings.items()]
        resized = self.set_narrow(screen)
        if keys == self._drawn and not resized:
            return
        if screen.app.app_focus and self.is_attached and screen is self.screen:  # when Footer recomposes
            self._drawn = keys
        super().bindings_changed(screen)


def rounded(frame: pl.DataFrame, digits: int) -> pl.DataFrame:
    """`frame` with each float column rounded for display (see round_column)."""
    return frame.with_columns(round_column(frame[c], digits) for c in frame.select(cs.float()).columns)


def float_widths(frame: pl.DataFrame) -> list[int | None]:
    """Each float column's width: its name's or its widest value's as the table writes floats
    (f"{v:n}"); None (the table measures it) for the other columns. The table measured a float column
    by its smallest and largest value only, and cut a longer one between them: 0.123456 beside 1 and
    -0.5 read '0.1…'. One format per distinct value."""
    floats = set(frame.select(cs.float()).columns)
    return [max([cell_len(name), *(len(f"{v:n}") for v in frame[name].drop_nulls().unique().to_list())])
            if name in floats else None for name in frame.columns]


def round_column(col: pl.Series, digits: int) -> pl.Series:
    """Round a float column to `digits` significant digits of its largest value, so that every cell
    has the same decimals (the table sizes a numeric column from its extremes)."""
    top = col.abs().max()
    if top is None or not np.isfinite(top) or top == 0:
        return col
    return col.round(int(min(8, max(0, digits - 1 - np.floor(np.log10(top))))))


class Scatter(PlotextPlot):
    """Targets on two embedding axes, coloured by cluster, with the highlighted target marked."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.points: pl.DataFrame = pl.DataFrame()
        self.marked: int | None = None
        self.explained: tuple[float, float] | None = None

    def plot(self, points: pl.DataFrame, marked: int | None = None,
             explained: tuple[float, float] | None = None) -> None:
        """points: target, cluster (may be null), pc0, pc1; explained: the share of the variance
        each axis explains (kept from the last plot when not given)."""
        self.points, self.marked = points, marked
        if explained is not None:
            self.explained = explained
        plt = self.plt
        plt.clear_data()
        # no "targets: " before the shares: at 80 columns the title was too long, and plotext drops such a title
        plt.title("pc0 x pc1" if self.explained is None else variance_shares(self.explained))
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
