"""Examples drawn in the terminal: a picture (or the text payload) with a caption, updated in place.

Screens compose their galleries once and `show` new examples in them: mounting a widget per
example made a detail screen slow (17 examples), and so did drawing each picture again on every
visit, so drawings are cached by the image's bytes. Pictures are drawn by textual-image: its
renderables into lines, or its widget where sixel or kitty graphics need one.
"""

from __future__ import annotations

import io
import os
import threading
from functools import lru_cache
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image as PILImage
from rich.console import Console
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget
from textual_image.renderable import Image as AutoRenderable  # what the terminal supports, asked at import
from textual_image.renderable.halfcell import Image as HalfcellRenderable
from textual_image.renderable.sixel import Image as SixelRenderable
from textual_image.renderable.tgp import Image as TGPRenderable
from textual_image.renderable.unicode import Image as UnicodeRenderable

try:  # importing the widget asks the terminal its cell size (before the app starts); a terminal
    # that reports 0 x 0 cells (a bare pty) makes textual-image divide by zero: no graphics then
    from textual_image.widget import Image as AutoImage
except ZeroDivisionError:
    AutoImage = None

IMAGE_MODES = ("auto", "halfcell", "text")
SHADES = " .:-=+*#%@"
PICTURE_WIDTH = 16  # cells; a cell is about twice as tall as wide
WIDE_CARD = PICTURE_WIDTH + 2  # for a caption such as "target 1234  label 5" beside no neighbour
_CONSOLES = threading.local()  # pictures are also drawn ahead in worker threads


def image_mode() -> str:
    """How pictures are drawn: DMDB_TUI_IMAGES=auto (best the terminal supports: sixel, kitty,
    colour half cells), halfcell (colour text cells, works everywhere) or text (plain characters)."""
    mode = os.environ.get("DMDB_TUI_IMAGES", "auto")
    return mode if mode in IMAGE_MODES else "auto"


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


def draw(renderable: Any, width: int) -> list[Strip]:
    """A renderable as lines `width` cells wide."""
    console = getattr(_CONSOLES, "console", None)
    if console is None:
        console = _CONSOLES.console = Console(file=io.StringIO(), color_system="truecolor", force_terminal=True)
    lines = console.render_lines(renderable, console.options.update_width(width), pad=True)
    return [Strip(line, width) for line in lines]


def drawing() -> str:
    """What pictures become: "graphics" (sixel or kitty: textual-image's widget, one per picture),
    else lines of "halfcell", "unicode" (textual-image's renderables) or "text" (shade_text)."""
    mode = image_mode()
    if mode != "auto":
        return mode
    if AutoImage is not None and AutoRenderable in (SixelRenderable, TGPRenderable):
        return "graphics"
    return "unicode" if AutoRenderable is UnicodeRenderable else "halfcell"


@lru_cache(maxsize=1024)
def _drawn_picture(data: bytes, shape: tuple[int, ...], dtype: str, how: str) -> tuple[Strip, ...]:
    image = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    if how == "text":
        return tuple(draw(shade_text(image, PICTURE_WIDTH), PICTURE_WIDTH))
    pil = to_pil(image)
    height = max(1, round(PICTURE_WIDTH * pil.height / pil.width / 2))
    renderable = UnicodeRenderable if how == "unicode" else HalfcellRenderable
    return tuple(draw(renderable(pil, width=PICTURE_WIDTH, height=height), PICTURE_WIDTH))


def picture_lines(image: np.ndarray, how: str) -> tuple[Strip, ...]:
    """The picture drawn as lines (see `drawing`); once per distinct image, then from a cache."""
    a = np.ascontiguousarray(image)
    return _drawn_picture(a.tobytes(), a.shape, a.dtype.str, how)


def predraw(images: Iterable[np.ndarray | None]) -> None:
    """Draw pictures ahead, e.g. in the worker thread that fetched them, so that showing them on the
    UI thread finds them drawn (colour half cells cost about a millisecond a picture)."""
    how = drawing()
    if how != "graphics":
        for image in images:
            if image is not None:
                picture_lines(image, how)


class Example(NamedTuple):
    """What is shown of one example: an image (or else a text payload) and a caption."""

    image: np.ndarray | None
    caption: str
    text: str | None = None


def example_lines(example: Example, how: str, width: int) -> list[Strip]:
    """Picture (unless graphics draw it), else the text payload, then the caption; `width` cells."""
    lines: list[Strip] = []
    if example.image is None:
        lines += draw(Text((example.text or "(no picture)")[:200]), width)
    elif how != "graphics":
        lines += [line.extend_cell_length(width) for line in picture_lines(example.image, how)]
    return lines + draw(Text(example.caption, style="dim"), width)


class Gallery(Widget):
    """A view of examples; `show` swaps them in place."""

    examples: list[Example]

    def show(self, examples: Sequence[Example], empty: str = "") -> None:
        """Show `examples`; with none, the words `empty`."""
        raise NotImplementedError


class Cards(Gallery):
    """Examples drawn as lines, up to `columns` side by side (as many as the width allows): one
    widget for a whole gallery, since each widget costs on every layout and restyle (a detail
    screen shows 17 examples), and lines drawn beforehand are cheap to paint."""

    DEFAULT_CSS = "Cards { width: auto; height: auto; max-width: 100%; }"

    def __init__(self, columns: int = 1, card_width: int = PICTURE_WIDTH, *, how: str | None = None,
                 id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.columns = columns
        self.card_width = card_width
        self.how = drawing() if how is None else how
        self.examples: list[Example] = []
        self.cards: list[list[Strip]] = []
        self._laid_out: tuple[int, list[Strip]] = (0, [])

    def show(self, examples: Sequence[Example], empty: str = "") -> None:
        """The layout is redone only when the height changed."""
        self.examples = list(examples)
        height = len(self.lines(self.size.width))
        w = self.card_width
        self.cards = [example_lines(e, self.how, w) for e in examples] or [draw(Text(empty, style="dim"), w)] * bool(empty)
        self._laid_out = (0, [])
        self.refresh(layout=len(self.lines(self.size.width)) != height)

    def fit(self, width: int) -> int:
        """How many cards go side by side in `width` cells (a cell between neighbours)."""
        return max(1, min(self.columns, len(self.cards), (width + 1) // (self.card_width + 1)))

    def lines(self, width: int) -> list[Strip]:
        """The cards laid out in rows for `width` cells (kept until the width or the cards change)."""
        columns = self.fit(width)
        if self._laid_out[0] == columns:
            return self._laid_out[1]
        cells = columns * (self.card_width + 1) - 1
        lines: list[Strip] = []
        for first in range(0, len(self.cards), columns):
            row = self.cards[first:first + columns]
            for y in range(max(map(len, row))):
                parts = [card[y] if y < len(card) else Strip.blank(self.card_width) for card in row]
                lines.append(Strip.join([part for p in parts for part in (p, Strip.blank(1))][:-1]).extend_cell_length(cells))
        self._laid_out = (columns, lines)
        return lines

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return self.fit(container.width) * (self.card_width + 1) - 1

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.lines(width))

    def render_line(self, y: int) -> Strip:
        lines = self.lines(self.size.width)
        return lines[y] if y < len(lines) else Strip.blank(self.size.width)


class GraphicCards(Gallery):
    """Cards for sixel or kitty graphics: these need textual-image's widget for each picture, so
    slots of (picture widget, caption Cards) are composed once and filled in place."""

    DEFAULT_CSS = "GraphicCards { layout: grid; grid-gutter: 0 1; width: auto; height: auto; }"

    def __init__(self, columns: int, slots: int, card_width: int, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.slots = slots
        self.card_width = card_width
        self.styles.grid_size_columns = columns
        self.examples: list[Example] = []

    def compose(self) -> ComposeResult:
        for _ in range(self.slots):
            with Vertical(classes="example graphics"):
                yield AutoImage(None, classes="picture")
                yield Cards(1, self.card_width, how="graphics")
        yield Cards(1, self.card_width, how="graphics", id="empty")

    def show(self, examples: Sequence[Example], empty: str = "") -> None:
        self.examples = list(examples[: self.slots])
        for i, slot in enumerate(self.query(".example")):
            shown = self.examples[i:i + 1]
            slot.display = bool(shown)
            if shown:
                picture = slot.query_one(AutoImage)
                picture.image = None if shown[0].image is None else to_pil(shown[0].image)
                picture.display = shown[0].image is not None
                slot.query_one(Cards).show(shown)
        self.query_one("#empty", Cards).show([], empty if not self.examples else "")


def gallery(columns: int, slots: int, card_width: int = PICTURE_WIDTH, *, id: str | None = None) -> Gallery:  # noqa: A002
    """A view of up to `slots` examples, `columns` to a row, each `card_width` cells wide (the
    picture's width; more leaves room for a longer caption). One example: gallery(1, 1)."""
    if drawing() == "graphics":
        return GraphicCards(columns, slots, card_width, id=id)
    return Cards(columns, card_width, id=id)
