"""What every data screen shares: database calls in worker threads that post their results back."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual.actions import SkipAction
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input, Static
from textual.worker import get_current_worker

from ..service import DmdbError, Service, Stopped

if TYPE_CHECKING:
    from ..app import DmdbApp

BUSY_AFTER = 1.0
"""Seconds a call may hold the database before a waiting screen says what it waits for."""
STOP_KEY = "ctrl+g"
"""Stops the call holding the database, from any screen (a text field takes a plain letter)."""
NO_FIT = ("This database holds no fit yet: quit (q), run `dmdb fit` on it, then reopen the TUI "
          "(while the TUI has it open, no other process can write to it).")


class Fetched(Message):
    """The result (or error) of one database call, delivered on the UI thread."""

    def __init__(self, key: str, value: Any = None, error: BaseException | None = None) -> None:
        super().__init__()
        self.key = key
        self.value = value
        self.error = error


class DataScreen(Screen):
    """A screen whose data comes from the Service.

    `fetch("x", fn, ...)` runs fn in a thread worker (group "x", exclusive, so a newer request
    replaces an older one and a superseded result is dropped); its result arrives as `show_x(value)`
    (awaited if it is a coroutine), a failure as one readable line in `fail`. A fetch given a
    `waiting` text shows it in the STATUS widget until its result arrives, followed, while a call
    has held the database for long, by what that call reads and how to stop it (`show_waiting`).
    """

    STATUS = "#status"
    """The widget that says what the screen waits for."""
    _shown_fit: int | None = -1

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[str, str] = {}
        """What each fetch under way that fills the screen loads, by key."""

    def on_screen_resume(self) -> None:
        """(Re)load when first shown and whenever the browsed fit changed meanwhile."""
        if self._shown_fit != self.fit_id:
            self._shown_fit = self.fit_id
            self.reload()

    def reload(self) -> None:
        """Start the workers that fill this screen."""

    def focus_input_now(self, box: Input) -> None:
        """The action of a key that jumps to an input line ('/'), bound with priority=True so that it
        runs when the App takes the key from the terminal: the focus moves at once (`Input.focus`
        waits a turn of the App's queue, and keys typed in a burst meanwhile went to the widget that
        still had it). In the box itself the key is typed as usual."""
        if self.focused is box:  # not box.has_focus: that turns true only once the box handles its Focus event
            raise SkipAction()
        self.set_focus(box)

    @property
    def dmdb_app(self) -> "DmdbApp":
        return self.app  # type: ignore[return-value]

    @property
    def service(self) -> Service:
        assert self.dmdb_app.service is not None, "screens are only shown once the database is open"
        return self.dmdb_app.service

    @property
    def fit_id(self) -> int | None:
        return self.dmdb_app.fit_id

    def fetch(self, key: str, fn: Callable[..., Any], *args: Any, waiting: str | None = None) -> None:
        def call() -> None:
            try:
                value, error = fn(*args), None
            except Exception as e:  # noqa: BLE001 - shown to the user as one line, never a traceback
                value, error = None, e
            if not get_current_worker().is_cancelled:
                self.post_message(Fetched(key, value, error))

        if waiting is None:
            self.waiting.pop(key, None)
        else:
            self.waiting[key] = waiting
            self.query_one(self.STATUS, Static).update(Text(waiting))
        self.run_worker(call, thread=True, exclusive=True, group=key, name=key)

    def fetch_for_fit(self, key: str, fn: Callable[[int], Any], waiting: str) -> None:
        """`fetch(key, fn, fit_id)`, saying `waiting` in the "#status" line meanwhile; with no fit,
        the status says so and nothing is fetched."""
        if self.fit_id is None:
            self.query_one(self.STATUS, Static).update(NO_FIT)
            return
        self.fetch(key, fn, self.fit_id, waiting=waiting)

    def show_waiting(self, running: tuple[str, float] | None) -> None:
        """Say what the screen waits for; when a call has held the database for BUSY_AFTER seconds,
        also what it reads (this screen's or another's, such as a long console query) and how to stop it."""
        if not self.waiting:
            return
        text = Text(" ".join(self.waiting.values()))
        if running is not None and running[1] >= BUSY_AFTER:
            what, seconds = running
            text.append(f"\nthe database has been reading {what} for {seconds:.0f} s: "
                        f"{STOP_KEY} stops it, or wait", style="bold")
        self.query_one(self.STATUS, Static).update(text)

    async def on_fetched(self, message: Fetched) -> None:
        message.stop()
        waited = self.waiting.pop(message.key, None) is not None
        if message.error is not None:
            if waited:  # else the status went on saying "loading"
                self._shown_fit = -1  # shown again, the screen loads again
                self.query_one(self.STATUS, Static).update(Text(
                    f"{one_line(message.error)}. Leave this screen and come back to load it again.", style="bold"))
            self.fail(message.key, message.error)
        else:
            shown = getattr(self, f"show_{message.key}")(message.value)
            if inspect.isawaitable(shown):  # e.g. until a new table is mounted
                await shown

    def fail(self, key: str, error: BaseException) -> None:
        """Say what went wrong in one line (a call the user stopped is no error)."""
        if isinstance(error, Stopped):
            self.notify(str(error), timeout=4)
        else:
            self.notify(one_line(error), title=f"could not load {key}", severity="error", timeout=8)


def one_line(error: BaseException) -> str:
    """dmdb errors verbatim, anything else with its type."""
    return str(error) if isinstance(error, DmdbError) else f"{type(error).__name__}: {error}"
