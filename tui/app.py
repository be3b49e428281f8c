"""The dmdb Textual app: opens a database read-only and lets the screens browse its latest fit."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message
from textual.widgets import Header, Static

from .screens import (
    EmbeddingsScreen,
    HelpScreen,
    LeakageScreen,
    MessageScreen,
    OverviewScreen,
    SqlScreen,
    TargetDetailScreen,
    TargetsScreen,
)
from .screens.base import STOP_KEY, DataScreen
from .widgets import KeyFooter
from .service import DatabaseLockedError, DmdbError, NoFitError, Service

SCREENS_BY_KEY = {
    "overview": ("1", "Overview", "experiments, runs by role, fits"),
    "targets": ("2", "Targets", "every target: margins, Spearman, brittleness"),
    "leakage": ("3", "Leakage", "candidate near duplicates between targets and train examples"),
    "embeddings": ("4", "Embeddings", "targets on the first two principal components"),
    "sql": ("5", "SQL", "run SQL against the database"),
}


class DmdbCommands(Provider):
    """Command palette: the screens, help, and 'open target N' for a typed number."""

    def commands(self) -> list[tuple[str, str, object]]:
        app: DmdbApp = self.app  # type: ignore[assignment]
        cmds = [(f"Show {title}", help_, partial(app.action_show, mode)) for mode, (_, title, help_) in SCREENS_BY_KEY.items()]
        return cmds + [("Help", "keys and screens", app.action_help)]

    async def discover(self) -> Hits:
        for name, help_, cb in self.commands():
            yield DiscoveryHit(name, cb, help=help_)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        app: DmdbApp = self.app  # type: ignore[assignment]
        text = query.strip().removeprefix("target").strip()
        if text.isdigit():
            yield Hit(1.0, f"Open target {text}", partial(app.open_target, int(text)), help="target detail")
        matcher = self.matcher(query)
        for name, help_, cb in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), cb, help=help_)  # type: ignore[arg-type]


class DmdbApp(App[None]):
    """`dmdb tui`: keyboard-first browsing of one database, never writing to it."""

    CSS_PATH = "dmdb.tcss"
    TITLE = "dmdb"
    COMMANDS = App.COMMANDS | {DmdbCommands}
    MODES = {
        "overview": OverviewScreen,
        "targets": TargetsScreen,
        "leakage": LeakageScreen,
        "embeddings": EmbeddingsScreen,
        "sql": SqlScreen,
    }
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        *(Binding(key, f"show('{mode}')", title) for mode, (key, title, _) in SCREENS_BY_KEY.items()),
        Binding("question_mark", "help", "Help"),
        # priority: also from the SQL query line; shown only while a call holds the database
        Binding(STOP_KEY, "stop", "Stop", priority=True),
    ]

    class Opened(Message):
        def __init__(self, service: Service, fit_id: int | None) -> None:
            super().__init__()
            self.service = service
            self.fit_id = fit_id

    class OpenFailed(Message):
        def __init__(self, error: DmdbError) -> None:
            super().__init__()
            self.error = error

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self.service: Service | None = None
        self.fit_id: int | None = None
        self.sql_history: list[str] = []
        self._busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"opening {self.path} (read-only) ...", id="opening")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = self.path
        self.open_database()
        self.set_interval(0.5, self.poll_database)

    def poll_database(self) -> None:
        """Let the screen say what it waits for, and the footer offer the stop key only while a call
        holds the database."""
        try:
            screen = self.screen
        except ScreenStackError:  # quitting
            return
        running = None if self.service is None else self.service.running()
        if isinstance(screen, DataScreen):
            screen.show_waiting(running)
        if (running is not None) != self._busy:
            self._busy = running is not None
            self.refresh_bindings()

    @work(thread=True, exclusive=True, group="open")
    def open_database(self) -> None:
        """Open in a thread: a missing or locked file becomes a message, never a traceback."""
        try:
            service = Service.open(self.path)
        except DmdbError as e:
            self.post_message(self.OpenFailed(e))
            return
        try:
            fit_id: int | None = service.latest_fit()
        except NoFitError:
            fit_id = None
        self.post_message(self.Opened(service, fit_id))

    def on_dmdb_app_opened(self, message: Opened) -> None:
        self.service, self.fit_id = message.service, message.fit_id
        if self.fit_id is None:
            self.notify(f"{self.path} holds no fit yet: quit, run `dmdb fit`, reopen. Overview and SQL still work.",
                        title="no fit", severity="warning", timeout=10)
        self.switch_mode("overview")

    def on_dmdb_app_open_failed(self, message: OpenFailed) -> None:
        e = message.error
        locked = isinstance(e, DatabaseLockedError)
        title = "The database is locked by a writer" if locked else "Cannot open the database"
        text = str(e) + ("\n\nDuckDB lets no other process open the file, not even read-only, while a writer "
                         f"holds it. Retry once the writer has finished. (Last try: {time.strftime('%H:%M:%S')})"
                         if locked else "")
        self.push_screen(MessageScreen(title, text, can_retry=locked), self.after_message)

    def after_message(self, choice: str | None) -> None:
        if choice == "retry":
            self.open_database()
        else:
            self.exit()

    # -- actions ---------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "stop" or self._busy

    def action_stop(self) -> None:
        if self.service is not None:
            self.stop_call(self.service)

    @work(thread=True, exclusive=True, group="stop")
    def stop_call(self, service: Service) -> None:
        """Stop the call holding the database (in a thread: it waits for the call to let go)."""
        if service.stop() is None:
            self.call_from_thread(self.notify, "nothing is running", timeout=3)

    def action_show(self, mode: str) -> None:
        """Show `mode`'s screen; in that mode already, its key leaves the screens pushed over it
        (a target's detail), as the footer's 'Targets' on a detail opened from Targets promises."""
        if self.service is None:
            return
        if mode != self.current_mode:
            self.switch_mode(mode)
            return
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def open_target(self, target: int) -> None:
        """Open `target` of the browsed fit in this mode's detail screen."""
        if self.service is None or self.fit_id is None:
            self.notify("no fit to show targets of", severity="warning")
            return
        self.detail_screen().open(target, self.fit_id)

    def detail_screen(self) -> TargetDetailScreen:
        """This mode's detail screen, composed on first use and kept (installed) to be refilled."""
        name = f"detail-{self.current_mode}"
        if not self.is_screen_installed(name):
            self.install_screen(TargetDetailScreen(), name)
        return self.get_screen(name, TargetDetailScreen)

    def browse_fit(self, fit_id: int) -> None:
        self.fit_id = fit_id
        self.notify(f"browsing fit {fit_id}")

    def on_unmount(self) -> None:
        if self.service is not None:
            self.service.close()


def run(path: str | Path) -> None:
    DmdbApp(path).run()
