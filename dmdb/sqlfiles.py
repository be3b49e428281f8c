"""Locating the SQL files that define the database, in a wheel (dmdb/sql) or a source checkout (sql/)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def sql_dir() -> Path:
    """The installed copy (dmdb/sql, placed by the wheel build) wins over the checkout's top-level sql/."""
    for candidate in (_HERE / "sql", _HERE.parent / "sql"):
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise FileNotFoundError(f"dmdb's SQL files are missing: looked in {_HERE / 'sql'} and {_HERE.parent / 'sql'}")


def sql_files() -> list[Path]:
    """Schema first, then views and macros: files apply in name order (00_, 10_, ...)."""
    return sorted(sql_dir().glob("*.sql"))
