"""Files that appear whole or not at all."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .errors import BadInputError


def temporary(path: Path) -> Path:
    """The name `replaced` writes `path` under: a dot-name beside it, which no '*.parquet' glob matches."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def replaced(path: str | Path) -> Iterator[Path]:
    """A temporary dot-name beside `path` for the block to write; renamed onto `path` when the block
    ends, removed when it fails or is interrupted (a full disk, Ctrl-C), so that `path` is either
    the new file or what it was before, and no partial file is left behind."""
    with replaced_together([path]) as (tmp,):
        yield tmp


@contextmanager
def replaced_together(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """`replaced` for files that belong together (an export's runs and weights): every path gets its
    dot-name, and the renames wait until the block has written them all, so a failure leaves each
    path as it was. The paths are checked first (folder there, no folder in the file's place, none
    named twice), as a rename that failed after another had succeeded would leave a mix."""
    finals = [Path(p) for p in paths]
    seen: set[Path] = set()
    for path in finals:  # else the error would name a dot-name, a file the user never gave
        if not path.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path.parent))
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if path.resolve() in seen:
            raise BadInputError(f"{path} is named twice: give each file its own name")
        seen.add(path.resolve())
    tmps = [temporary(p) for p in finals]
    try:
        yield tmps
        for tmp, path in zip(tmps, finals):
            os.replace(tmp, path)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
