"""Files that appear whole or not at all."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary(path: Path) -> Path:
    """The name `replaced` writes `path` under: a dot-name beside it, which no '*.parquet' glob matches."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def replaced(path: str | Path) -> Iterator[Path]:
    """A temporary dot-name beside `path` for the block to write; renamed onto `path` when the block
    ends, removed when it fails or is interrupted (a full disk, Ctrl-C), so that `path` is either
    the new file or what it was before, and no partial file is left behind."""
    path = Path(path)
    if not path.parent.is_dir():  # else the error would name the dot-name, a file the user never gave
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path.parent))
    tmp = temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
