"""Examples drawn in the terminal: a picture (or the text payload) with a caption, updated in place.

Screens compose their example views once and `show` a new example in them: mounting widgets is
what made a detail screen slow (17 examples), and so was drawing a picture again on every visit,
so each drawing is cached by the image's bytes.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from typing import Any, NamedTuple, Sequence

import numpy as np
from PIL import Image as PILImage
from rich.console import Console
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static
from textual_image.renderable.halfcell import Image as HalfcellRenderable
from textual_image.widget import Image as AutoImage  # importing queries the terminal: before the app starts

IMAGE_MODES = ("auto", "halfcell", "text")
SHADES = " .:-=+*#%@"
PICTURE_WIDTH = 16  # cells; a cell is about twice as tall as wide
CARD_WIDTH = PICTURE_WIDTH + 2
_CONSOLE = Console(width=CARD_WIDTH, file=io.StringIO(), color_system="truecolor", force_terminal=True)


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


def draw(renderable: Any) -> list[Strip]:
    """A renderable as lines CARD_WIDTH cells wide."""
    lines = _CONSOLE.render_lines(renderable, _CONSOLE.options.update_width(CARD_WIDTH), pad=True)
    return [Strip(line, CARD_WIDTH) for line in lines]


@lru_cache(maxsize=1024)
def _drawn_picture(data: bytes, shape: tuple[int, ...], dtype: str, mode: str) -> tuple[Strip, ...]:
    image = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    if mode == "text":
        return tuple(draw(shade_text(image, PICTURE_WIDTH)))
    pil = to_pil(image)
    height = max(1, round(PICTURE_WIDTH * pil.height / pil.width / 2))
    return tuple(draw(HalfcellRenderable(pil, width=PICTURE_WIDTH, height=height)))


def picture_lines(image: np.ndarray, mode: str) -> tuple[Strip, ...]:
    """The picture in colour half cells (textual-image) or characters; drawn once per distinct image."""
    a = np.ascontiguousarray(image)
    return _drawn_picture(a.tobytes(), a.shape, a.dtype.str, mode)


class Card(Widget):
    """Lines drawn beforehand and shown as they are: Textual measures and redraws widgets often,
    and a picture of coloured half cells is costly to lay out each time."""

    DEFAULT_CSS = "Card { width: auto; height: auto; }"

    def __init__(self, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.strips: list[Strip] = []

    def show(self, strips: list[Strip]) -> None:
        """New lines; the layout is redone only when the height changed."""
        resized = len(strips) != len(self.strips)
        self.strips = strips
        self.refresh(layout=resized)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return CARD_WIDTH

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.strips)

    def render_line(self, y: int) -> Strip:
        return self.strips[y] if y < len(self.strips) else Strip.blank(CARD_WIDTH)


class Example(NamedTuple):
    """What an ExampleView shows: an image (or else a text payload) and a caption."""

    image: np.ndarray | None
    caption: str
    text: str | None = None


class ExampleView(Vertical):
    """One example: its picture (terminal graphics, or characters), else its text, and a caption.

    Sixel and kitty graphics need textual-image's widget (composed only in that mode); colour half
    cells, characters, text payloads and the caption are lines in a Card.
    """

    DEFAULT_CLASSES = "example"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.mode = image_mode()
        self.example: Example | None = None

    def compose(self) -> ComposeResult:
        if self.mode == "auto":
            self.add_class("graphics")
            yield AutoImage(None, classes="picture")
        yield Card()

    def show(self, example: Example) -> None:
        self.example = example
        image = example.image
        lines: list[Strip] = []
        if self.mode == "auto":
            picture = self.query_one(AutoImage)
            picture.image = None if image is None else to_pil(image)
            picture.display = image is not None
        elif image is not None:
            lines += picture_lines(image, self.mode)
        if image is None:
            lines += draw(Text((example.text or "(no picture)")[:200]))
        self.query_one(Card).show(lines + draw(Text(example.caption, style="dim")))


class Gallery(Vertical):
    """Up to `slots` examples in a grid of views composed once; `show` fills them in place."""

    def __init__(self, slots: int, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes="gallery")
        self.slots = slots

    def compose(self) -> ComposeResult:
        for _ in range(self.slots):
            yield ExampleView()
        yield Static("[dim](none)[/dim]", classes="empty")

    def show(self, examples: Sequence[Example]) -> None:
        examples = examples[: self.slots]
        for i, view in enumerate(self.query(ExampleView)):
            if i < len(examples):
                view.show(examples[i])
            view.display = i < len(examples)
        self.query_one(".empty").display = not examples
