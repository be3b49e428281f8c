"""The CLI's two consoles: results and summaries on stdout (`dmdb ingest DIR > log` keeps them),
progress bars, warnings and errors on stderr. Rich only, so that `dmdb worker` loads no more."""

from __future__ import annotations

from rich.console import Console

# markup=False: what they print holds paths, SQL results and error messages, where '[bold]' vanished and
# '[/x]' raised rich's MarkupError; a styled word is a Text with a style instead
STDOUT = Console(soft_wrap=True, markup=False)
STDERR = Console(stderr=True, soft_wrap=True, markup=False)
