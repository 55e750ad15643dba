"""Benchmark prompt sets: a registry of named sets, and a loader for any local CSV / JSONL / JSON / Parquet.

A named set is read from the local data dir first (``data_dir`` / ``--data-dir`` / ``$SAFEREASON_DATA``,
laid out like the public files: ``strongreject/strongreject_dataset.csv`` …), so everything works
offline. Otherwise it is downloaded from a source pinned to a commit (GitHub) or revision (Hugging Face),
checked against the file's known sha256 where there is one, and cached under the user cache.

Whatever was read, :class:`LoadedBenchmark` carries the sha256 of its bytes, which goes into the run
manifest: two runs over the same prompts can then be told apart from two runs over different files. A set of
several files (FigStep's question file and images, MM-SafetyBench's scenario files) is hashed by a
``sha256sum``-style listing of the files it used.

Prompt ids are stable strings: the dataset's own id where it has one (HarmBench ``BehaviorID``, XSTest
``id``, JBB ``Index``; a local file's ``--id-column``, else its column named ``id``), else ``<name>-<row>`` with
the 1-based row number, zero-padded to four digits. A prompt's ``meta`` holds the source row's other non-empty
fields under their original column names. A prompt holding a NUL byte is refused, naming its row.

The pieces live in their own modules: :mod:`~safereason.data.tables` (reading files, rows to prompts),
:mod:`~safereason.data.fetch` (data dir, pinned remotes, cache), :mod:`~safereason.data.spec` (the spec and the
registry) and :mod:`safereason.data.sets` (one module per registered set). This module loads a set or a file
and re-exports their names, so ``safereason.data.benchmarks`` keeps working as the one import path.
"""

# ruff: noqa: F401  (this module re-exports the names of the modules it was split into)
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

import safereason.data.sets  # registers the sets
from safereason.data.fetch import (
    _GH,
    DOWNLOAD_TIMEOUT_S,
    _cache_path,
    _fetch_file,
    _fetch_remote,
    _is_url,
    _listing,
    _read_registered,
    _why,
    remote_url,
)
from safereason.data.sets.advbench import COMMIT as ADVBENCH_COMMIT
from safereason.data.sets.advbench import parse as _advbench
from safereason.data.sets.figstep import FIGSTEP_COMMIT, FIGSTEP_TEXT, _figstep, _figstep_reader
from safereason.data.sets.harmbench import COMMIT as HARMBENCH_COMMIT
from safereason.data.sets.harmbench import harmbench_prompt
from safereason.data.sets.harmbench import parse as _harmbench
from safereason.data.sets.jailbreakbench import REVISION as JBB_REVISION
from safereason.data.sets.jailbreakbench import parser as _jbb
from safereason.data.sets.mm_safetybench import (
    MMSB_COMMIT,
    MMSB_REMOTE,
    MMSB_SCENARIOS,
    MMSB_TINY_SHA256,
    _mmsb,
    _mmsb_reader,
)
from safereason.data.sets.smoke import parse as _smoke
from safereason.data.sets.strongreject import COMMIT as STRONGREJECT_COMMIT
from safereason.data.sets.strongreject import parser as _strongreject
from safereason.data.sets.utility import GSM8K_COMMIT, MATH500_REMOTE, MATH_INSTRUCTION
from safereason.data.sets.utility import parse_gsm8k as _gsm8k
from safereason.data.sets.utility import parse_math500 as _math500
from safereason.data.sets.wildjailbreak import FILE as WILDJAILBREAK_EVAL_FILE
from safereason.data.sets.wildjailbreak import REVISION as WILDJAILBREAK_EVAL_REVISION
from safereason.data.sets.wildjailbreak import parse as _wildjailbreak_eval
from safereason.data.sets.xstest import COMMIT as XSTEST_COMMIT
from safereason.data.sets.xstest import parse as _xstest
from safereason.data.spec import BENCHMARKS, BenchmarkSpec, LoadedBenchmark, default_data_dir
from safereason.data.tables import (
    BENIGN_VALUES,
    DEFAULT_CATEGORY_COLUMN,
    DEFAULT_LABEL_COLUMN,
    FORMATS,
    HARMFUL_VALUES,
    PROMPT_COLUMNS,
    SUPPORTED,
    Row,
    Table,
    _check,
    _decode,
    _format_of,
    _jsonable,
    _meta,
    _read_csv,
    _read_json,
    _read_jsonl,
    _read_parquet,
    _require,
    _text,
    label_of,
    prompts_from_table,
    read_table,
)
from safereason.errors import DataError, SafereasonError


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or PurePosixPath(text).suffix.lower() in FORMATS


def load_benchmark(name_or_path: str, *, data_dir: str | Path | None = None, limit: int | None = None,
                   prompt_column: str | None = None, id_column: str | None = None,
                   category_column: str | None = None, label_column: str | None = None) -> LoadedBenchmark:
    """Load a local data file or a registered set; ``limit`` keeps the first N prompts in file order.

    An existing file path wins over a registered name. The column options apply to local files only.
    The whole file is validated (and hashed) even when ``limit`` keeps fewer prompts.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise DataError(f"limit must be a positive whole number of prompts, got {limit!r}")
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():  # given, so it must exist (any set)
        raise DataError(f"data dir {data_dir} (--data-dir) is not a directory")
    columns = {"prompt_column": prompt_column, "id_column": id_column, "category_column": category_column,
               "label_column": label_column}
    path = Path(name_or_path).expanduser()
    if path.is_file():
        fmt = _format_of(str(path))
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}") from None
        table = read_table(data, fmt, str(path))
        prompts = prompts_from_table(table, id_prefix=path.stem, **columns)
        name, source = name_or_path, str(path.resolve())
    elif name_or_path in BENCHMARKS:
        spec = BENCHMARKS.get(name_or_path)
        if given := [k for k, v in columns.items() if v is not None]:
            raise DataError(f"the column options ({', '.join(given)}) apply to local files only, "
                            f"not to the registered set {spec.name!r}")
        ddir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        if ddir is not None and spec.resource is None and not ddir.is_dir():
            origin = "--data-dir" if data_dir is not None else "SAFEREASON_DATA"
            raise DataError(f"data dir {ddir} ({origin}) is not a directory")
        if spec.read is not None:
            data, source, table = spec.read(spec, ddir)
        else:
            data, source, fmt = _read_registered(spec, ddir)
            table = read_table(data, fmt, source)
        prompts = spec.parse(table)
        name = spec.name
    elif path.exists():
        raise DataError(f"{path} is not a file; give a {SUPPORTED} file or a registered benchmark name")
    elif _looks_like_path(name_or_path):
        raise DataError(f"no such file: {path}")
    else:
        try:
            BENCHMARKS.get(name_or_path)
        except SafereasonError as e:
            raise DataError(f"{e} Or give the path of a local {SUPPORTED} file.") from None
        raise AssertionError("unreachable")  # pragma: no cover
    if limit is not None:
        prompts = prompts[:limit]
    return LoadedBenchmark(name=name, source=source, sha256=hashlib.sha256(data).hexdigest(), prompts=prompts)

