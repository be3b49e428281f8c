"""Printing results: a rich table by default, or csv / json / parquet for scripts."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from ..errors import DmdbError

FORMATS = ("table", "csv", "json", "parquet")
STDOUT = Console(soft_wrap=True)


def emit(df: pl.DataFrame, fmt: str = "table", output: str | None = None, title: str | None = None, max_rows: int = 200) -> None:
    """Write a frame to stdout (or `output`) in the chosen format."""
    if fmt != "parquet":
        df = as_text_columns(df, fmt)
    if fmt == "parquet":
        if output is None:
            if sys.stdout.isatty():
                raise DmdbError("--format parquet writes binary; give --output FILE.parquet")
            df.write_parquet(sys.stdout.buffer)
        else:
            df.write_parquet(output)
        return
    if fmt == "csv":
        text = df.write_csv()
    elif fmt == "json":
        text = df.write_json()
    else:
        if output:
            with open(output, "w") as f:
                Console(file=f, width=200).print(rich_table(df, title, max_rows))
        else:
            # a pipe or file gets the table at its natural width rather than wrapped to 80 columns
            console = STDOUT if sys.stdout.isatty() else Console(file=sys.stdout, width=240)
            console.print(rich_table(df, title, max_rows))
        return
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def as_text_columns(df: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """Columns a text format cannot hold as they are: binary (a BLOB, or a BIT such as `mask`)
    as hex; for csv and the table, lists and arrays of scalars joined as '3,17,42' (they paste
    back into --remove) and other nested values as their text."""
    out = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if dtype == pl.Binary:
            out.append(col.bin.encode("hex"))
        elif fmt != "json" and isinstance(dtype, (pl.List, pl.Array)) and not dtype.inner.is_nested():
            as_list = col.arr.to_list() if isinstance(dtype, pl.Array) else col
            inner = pl.Utf8 if dtype.inner != pl.Binary else pl.Binary
            out.append(as_list.cast(pl.List(inner)).list.join(",") if inner == pl.Utf8
                       else as_list.list.eval(pl.element().bin.encode("hex")).list.join(","))
        elif fmt != "json" and dtype.is_nested():  # structs, lists of lists: as JSON text
            out.append(pl.struct(col.alias("v")).struct.json_encode().str.slice(5).str.head(-1).alias(name))
    return df.with_columns(out) if out else df


def rich_table(df: pl.DataFrame, title: str | None = None, max_rows: int = 200) -> Table:
    table = Table(title=title, header_style="bold cyan", show_lines=False)
    for name, dtype in df.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left", min_width=min(len(name), 12))
    for row in df.head(max_rows).iter_rows():
        table.add_row(*(_cell(v) for v in row))
    if df.height > max_rows:
        table.caption = f"{max_rows} of {df.height} rows shown; use --format csv for all"
    return table


def _cell(v: object) -> str:
    if v is None:
        return "[dim]null[/dim]"
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return s if len(s) <= 80 else s[:77] + "..."
