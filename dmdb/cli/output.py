"""Printing results: a rich table by default, or csv / json / parquet for scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import DmdbError
from .consoles import STDOUT


def check_destination(fmt: str, output: str | None) -> None:
    """Refuse what emit could not write (parquet to a terminal, a file in a missing folder), so a
    verb that works for minutes (dmdb fit) can do so before it starts."""
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise DmdbError("--format parquet writes binary; give --output FILE.parquet")
    if output is not None and not (folder := Path(output).absolute().parent).is_dir():
        raise DmdbError(f"cannot write --output {output}: the folder {folder} does not exist")


def emit(df: pl.DataFrame, fmt: str = "table", output: str | None = None, title: str | None = None, max_rows: int = 200) -> None:
    """Write a frame to stdout (or `output`) in the chosen format."""
    check_destination(fmt, output)
    if fmt != "parquet":
        df = as_text_columns(df, fmt)
    if fmt == "parquet":
        if output is None:
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
                Console(file=f, width=200, markup=False).print(rich_table(df, title, max_rows))
        else:
            # a pipe or file gets the table at its natural width rather than wrapped to 80 columns
            console = STDOUT if sys.stdout.isatty() else Console(file=sys.stdout, width=240, markup=False)
            console.print(rich_table(df, title, max_rows))
        return
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def as_text_columns(df: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """Columns a text format cannot hold as they are: binary (a BLOB; `db.sql` already gives BIT
    columns as bit strings) as hex, also inside lists and structs (then the value is JSON text);
    for csv and the table, lists and arrays of numbers joined as '3,17,42' (they paste back into
    --remove; a null is 'null') and other nested values as JSON text."""
    out = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if _holds(dtype, pl.Decimal) and (fmt == "json" or dtype.is_nested()):
            # polars writes decimals as JSON strings ("1.25"): numbers, as DuckDB's own json gives them
            # (a top-level decimal stays exact in csv and the table, which print it as it is)
            dtype = _decimals_as_float(dtype)
            col = col.cast(dtype)
            if fmt == "json" and not _holds(dtype, pl.Binary):  # else the blob is hex-encoded below
                out.append(col.alias(name))
                continue
        if dtype == pl.Binary:
            out.append(col.bin.encode("hex"))
        elif dtype.is_nested() and _holds(dtype, pl.Binary):
            out.append(col.map_elements(_json_text, return_dtype=pl.Utf8, skip_nulls=True))
        elif fmt == "json":
            continue
        elif isinstance(dtype, (pl.List, pl.Array)) and (dtype.inner.is_numeric() or dtype.inner == pl.Boolean):
            as_list = col.arr.to_list() if isinstance(dtype, pl.Array) else col
            out.append(as_list.list.eval(pl.element().cast(pl.Utf8).fill_null("null")).list.join(","))
        elif dtype.is_nested():
            out.append(pl.struct(col.alias("v")).struct.json_encode().str.slice(5).str.head(-1).alias(name))
    return df.with_columns(out) if out else df


def _decimals_as_float(dtype: pl.DataType) -> pl.DataType:
    if isinstance(dtype, pl.Decimal):
        return pl.Float64()
    if isinstance(dtype, pl.List):
        return pl.List(_decimals_as_float(dtype.inner))
    if isinstance(dtype, pl.Array):
        return pl.Array(_decimals_as_float(dtype.inner), dtype.shape)
    if isinstance(dtype, pl.Struct):
        return pl.Struct([pl.Field(f.name, _decimals_as_float(f.dtype)) for f in dtype.fields])
    return dtype


def _holds(dtype: pl.DataType, leaf: type[pl.DataType]) -> bool:
    """Whether dtype is a `leaf` type or a list, array or struct with one inside."""
    if isinstance(dtype, leaf):
        return True
    if isinstance(dtype, (pl.List, pl.Array)):
        return _holds(dtype.inner, leaf)
    if isinstance(dtype, pl.Struct):
        return any(_holds(f.dtype, leaf) for f in dtype.fields)
    return False


def _json_text(value: object) -> str:
    if isinstance(value, pl.Series):  # a list cell arrives as a Series
        value = value.to_list()
    return json.dumps(value, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


def rich_table(df: pl.DataFrame, title: str | None = None, max_rows: int = 200) -> Table:
    table = Table(title=title, header_style="bold cyan", show_lines=False)
    for name, dtype in df.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left", min_width=min(len(name), 12))
    for row in df.head(max_rows).iter_rows():
        table.add_row(*(_cell(v) for v in row))
    if df.height > max_rows:
        table.caption = f"{max_rows} of {df.height} rows shown; use --format csv for all"
    return table


def _cell(v: object) -> str | Text:
    if v is None:
        return Text("null", style="dim")
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return s if len(s) <= 80 else s[:77] + "..."
