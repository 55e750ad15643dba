"""Reading data files into rows (:class:`Table`) and rows into prompts: CSV / JSONL / JSON / Parquet.

Every problem with a file (encoding, syntax, a missing column, an empty prompt, a duplicate id) is a one-line
:class:`~safereason.errors.DataError` that says where it is, so a user can fix the file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from safereason.errors import DataError
from safereason.records import Label, Prompt

#: Tried in order when a local file is loaded without ``prompt_column``.
PROMPT_COLUMNS = ("prompt", "forbidden_prompt", "goal", "Behavior", "question", "instruction", "text")
#: Used as category / label columns of a local file when present and not named explicitly.
DEFAULT_CATEGORY_COLUMN = "category"
DEFAULT_LABEL_COLUMN = "label"
#: Used as the prompt id of a local file when present and no id column is named; else ids are ``<stem>-<row>``.
DEFAULT_ID_COLUMN = "id"
#: Label values (case-insensitive) that map to a :data:`~safereason.records.Label`; others stay in meta.
HARMFUL_VALUES = frozenset({"harmful", "unsafe", "malicious"})
BENIGN_VALUES = frozenset({"benign", "safe", "harmless", "unharmful", "not harmful"})

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
SUPPORTED = ".csv, .jsonl, .json or .parquet"

Row = dict[str, Any]


@dataclass(frozen=True)
class Table:
    """The rows of a data file as read, before any column is interpreted.

    ``lines`` gives each row's first line in the file (CSV, JSONL) so that errors can point at it.
    """

    where: str
    columns: tuple[str, ...]
    rows: list[Row]
    lines: list[int] | None = None

    def at(self, i: int, prompt_id: str | None = None) -> str:
        """Where row ``i`` (0-based) is, in words, for an error message."""
        text = f"row {i + 1}"
        if self.lines is not None:
            text += f" (line {self.lines[i]})"
        if prompt_id is not None:
            text += f", id {prompt_id!r}"
        return text


# -- reading files ---------------------------------------------------------------------------------

def _format_of(name: str) -> str:
    suffix = PurePosixPath(name.split("?")[0]).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise DataError(f"{name}: unsupported file type {suffix or '(no extension)'}; use {SUPPORTED}")
    return fmt


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{where} is not valid UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} (line {line}). "
            f"Re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT` with the file's real encoding "
            "in place of latin1 (mac_roman, cp1252, ...)"
        ) from None


def read_table(data: bytes, fmt: str, where: str) -> Table:
    """Parse the bytes of a CSV / JSONL / JSON / Parquet file into rows; every problem is a DataError."""
    if not data.strip():
        raise DataError(f"{where} is empty")
    if fmt == "parquet":
        return _read_parquet(data, where)
    text = _decode(data, where)
    if not text.strip():
        raise DataError(f"{where} is empty")
    if fmt == "csv":
        table = _read_csv(text, where)
    elif fmt == "jsonl":
        table = _read_jsonl(text, where)
    elif fmt == "json":
        table = _read_json(text, where)
    else:
        raise DataError(f"{where}: unsupported format {fmt!r}; use {SUPPORTED}")
    if not table.rows:
        raise DataError(f"{where} has no data rows")
    return table


#: The csv module's C long bound on 32-bit-long platforms (Windows); a field cannot be longer than the file anyway.
_CSV_FIELD_LIMIT_MAX = 2**31 - 1


def _read_csv(text: str, where: str) -> Table:
    """Rows of a CSV file; a field may be as long as the file (the csv module's default refuses > 131072 chars,
    which a long prompt exceeds: the runner's context check, not the reader, decides what is too long)."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(max(old, len(text)), _CSV_FIELD_LIMIT_MAX))
    try:
        return _read_csv_rows(text, where)
    finally:
        csv.field_size_limit(old)  # the limit is process-wide: leave it as found


def _read_csv_rows(text: str, where: str) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    lines: list[int] = []
    try:
        header = next(reader)
        if len(set(header)) != len(header):
            dup = next(c for c in header if header.count(c) > 1)
            raise DataError(f"{where}: the header names column {dup!r} twice")
        end = reader.line_num
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record:  # blank line
                continue
            if len(record) != len(header):
                raise DataError(
                    f"{where} line {start}: {len(record)} fields, but the header has {len(header)} "
                    "(an unquoted comma or quote?)"
                )
            rows.append(dict(zip(header, record, strict=True)))
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"{where} line {reader.line_num}: malformed CSV ({e})") from None
    return Table(where, tuple(header), rows, lines)


def _read_jsonl(text: str, where: str) -> Table:
    rows: list[Row] = []
    lines: list[int] = []
    columns: dict[str, None] = {}
    # split on "\n" only: str.splitlines would also split inside strings holding U+2028 and friends
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            msg = getattr(e, "msg", str(e))
            raise DataError(f"{where} line {n}: malformed JSON ({msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where} line {n}: expected a JSON object, got {type(obj).__name__}")
        columns.update(dict.fromkeys(obj))
        rows.append(obj)
        lines.append(n)
    return Table(where, tuple(columns), rows, lines)


def _read_json(text: str, where: str) -> Table:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where} line {e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(obj, list):
        raise DataError(f"{where} must hold a JSON array of objects, not a {type(obj).__name__}")
    columns: dict[str, None] = {}
    for i, r in enumerate(obj):
        if not isinstance(r, dict):
            raise DataError(f"{where} item {i + 1}: expected a JSON object, got {type(r).__name__}")
        columns.update(dict.fromkeys(r))
    return Table(where, tuple(columns), obj)


def _read_parquet(data: bytes, where: str) -> Table:
    import pyarrow.parquet as pq  # lazy: pyarrow is slow to import and most runs never need it

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{where} is not a readable Parquet file ({type(e).__name__}: {e})") from None
    rows = table.to_pylist()
    if not rows:
        raise DataError(f"{where} has no data rows")
    return Table(where, tuple(table.column_names), rows)


# -- rows to prompts -------------------------------------------------------------------------------

def _require(table: Table, *columns: str) -> None:
    for c in columns:
        if c not in table.columns:
            raise DataError(f"{table.where} has no column {c!r}; its columns are: {', '.join(table.columns)}")


def _text(table: Table, i: int, column: str) -> str:
    """The prompt text of row ``i``; a one-message user chat (as in verl parquet files) counts as text."""
    value = table.rows[i].get(column)
    if value is None or isinstance(value, str):
        return value or ""
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "user" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    kind = type(value).__name__
    raise DataError(f"{table.where} {table.at(i)}: column {column!r} holds a {kind}, not text")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _meta(row: Row, *drop: str) -> dict[str, Any]:
    """The row's other fields, under their original names; empty cells are left out."""
    return {k: _jsonable(v) for k, v in row.items() if k not in drop and v is not None and v != ""}


def label_of(value: Any) -> Label | None:
    """``harmful`` / ``benign`` for a recognisable label value, else None (the raw value stays in meta)."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    if v in HARMFUL_VALUES:
        return "harmful"
    if v in BENIGN_VALUES:
        return "benign"
    return None


def _check(prompts: list[Prompt], table: Table, id_note: str = "") -> list[Prompt]:
    """Every prompt non-empty and free of NUL bytes, every id unique; ``prompts[i]`` must come from
    ``table.rows[i]``. ``id_note`` is added to id errors (to say where the ids came from)."""
    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        if not p.id.strip():
            raise DataError(f"{table.where} {table.at(i)}: empty id{id_note}")
        if not p.prompt.strip():
            raise DataError(f"{table.where} {table.at(i, p.id)}: the prompt is empty")
        if "\x00" in p.prompt:  # C strings, tokenizers and HTTP servers cut or choke on it: never a real prompt
            raise DataError(f"{table.where} {table.at(i, p.id)}: the prompt holds a NUL byte (\\x00) at character "
                            f"{p.prompt.index(chr(0))}; remove it from the file")
        if p.id in first:
            raise DataError(
                f"{table.where}: duplicate id {p.id!r} in {table.at(first[p.id])} and {table.at(i)}; "
                f"ids must be unique{id_note}"
            )
        first[p.id] = i
    return prompts


def prompts_from_table(table: Table, *, id_prefix: str, prompt_column: str | None = None,
                       id_column: str | None = None, category_column: str | None = None,
                       label_column: str | None = None) -> list[Prompt]:
    """Prompts from a generic file: the column options pick the fields, with the defaults documented above."""
    if prompt_column is None:
        prompt_column = next((c for c in PROMPT_COLUMNS if c in table.columns), None)
        if prompt_column is None:
            raise DataError(
                f"{table.where} has none of the usual prompt columns ({', '.join(PROMPT_COLUMNS)}); "
                f"name one with --prompt-column. Its columns are: {', '.join(table.columns)}"
            )
    if category_column is None and DEFAULT_CATEGORY_COLUMN in table.columns:
        category_column = DEFAULT_CATEGORY_COLUMN
    if label_column is None and DEFAULT_LABEL_COLUMN in table.columns:
        label_column = DEFAULT_LABEL_COLUMN
    id_note = ""
    if id_column is None and DEFAULT_ID_COLUMN in table.columns and prompt_column != DEFAULT_ID_COLUMN:
        id_column = DEFAULT_ID_COLUMN
        id_note = (f" (column {DEFAULT_ID_COLUMN!r} is the prompt id by default; fix it or name another with "
                   "--id-column)")
    _require(table, *(c for c in (prompt_column, id_column, category_column, label_column) if c is not None))
    prompts = []
    for i, row in enumerate(table.rows):
        if id_column is not None:
            raw = row.get(id_column)
            pid = "" if raw is None else str(raw)
        else:
            pid = f"{id_prefix}-{i + 1:04d}"
        category = row.get(category_column) if category_column else None
        prompts.append(Prompt(
            id=pid,
            prompt=_text(table, i, prompt_column),
            category=None if category is None or category == "" else str(category),
            label=label_of(row.get(label_column)) if label_column else None,
            meta=_meta(row, *(c for c in (prompt_column, id_column, category_column) if c is not None)),
        ))
    return _check(prompts, table, id_note)
