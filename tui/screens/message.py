"""A full-screen message for a database the app cannot browse: locked, missing, not dmdb."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Static


class MessageScreen(Screen[str]):
    """Says what is wrong and what to do; dismisses with 'retry' or 'quit'."""

    BINDINGS = [Binding("r", "retry", "Retry"), Binding("q", "quit_app", "Quit")]

    def __init__(self, title: str, text: str, *, can_retry: bool) -> None:
        super().__init__()
        self.title_text = title
        self.text = text
        self.can_retry = can_retry

    def compose(self) -> ComposeResult:
        with Vertical(id="message"):
            yield Static(self.title_text, id="message-title")
            yield Static(self.text, id="message-text", markup=False)
            with Horizontal(id="message-buttons"):
                if self.can_retry:
                    yield Button("Retry (r)", id="retry", variant="primary")
                yield Button("Quit (q)", id="quit", variant="error")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool:
        return action != "retry" or self.can_retry

    def action_retry(self) -> None:
        self.dismiss("retry")

    def action_quit_app(self) -> None:
        self.dismiss("quit")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss("retry" if event.button.id == "retry" else "quit")
