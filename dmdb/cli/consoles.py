"""The CLI's two consoles: results and summaries on stdout (`dmdb ingest DIR > log` keeps them),
progress bars, warnings and errors on stderr. Rich only, so that `dmdb worker` loads no more."""

from __future__ import annotations

from rich.console import Console

STDOUT = Console(soft_wrap=True)
STDERR = Console(stderr=True, soft_wrap=True)
