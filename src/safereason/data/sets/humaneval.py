"""HumanEval (utility, code): the 164 hand-written Python problems of Chen et al., "Evaluating Large Language Models
Trained on Code" (2021, arXiv:2107.03374), from openai/human-eval.

``humaneval``: 164 prompts, label benign, ids ``humaneval-<n>``. The prompt asks for the function completed in a
```` ```python ```` block and shows its signature and docstring; ``meta`` keeps ``code_prompt`` (that code as
published), ``test`` and ``entry_point``, which the ``code-exec`` judge runs in its sandbox.

Upstream publishes ``data/HumanEval.jsonl.gz``; the data dir holds it decompressed as ``humaneval/HumanEval.jsonl``.
The dataset hash is taken of the decompressed JSONL either way, so both sources give the same hash.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from safereason.data.fetch import _GH, _fetch_remote
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _require, _text, read_table
from safereason.errors import DataError
from safereason.records import Prompt

HUMANEVAL_COMMIT = "6d43fb980f9fee3c892a914eda09951f772ad10d"  # openai/human-eval
HUMANEVAL_GZ_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"  # data/HumanEval.jsonl.gz
#: of the decompressed file (the data dir's ``humaneval/HumanEval.jsonl``)
HUMANEVAL_SHA256 = "1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2"
INSTRUCTION = ("Complete the following Python function. Reply with the whole function, with the imports it needs, "
               "in a single ```python code block.")


def _read_humaneval(spec: BenchmarkSpec, data_dir: Path | None) -> tuple[bytes, str, Table]:
    """The decompressed JSONL: the data dir's copy, else the pinned ``.gz`` (checked, then decompressed)."""
    assert spec.local_path is not None
    path = data_dir / spec.local_path if data_dir is not None else None
    if path is not None and path.is_file():
        try:
            data, source = path.read_bytes(), str(path.resolve())
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}") from None
    else:
        packed, source = _fetch_remote(spec, data_dir)
        try:
            data = gzip.decompress(packed)
        except (OSError, EOFError) as e:
            raise DataError(f"{source} is not a valid gzip file: {e}") from None
    return data, source, read_table(data, "jsonl", source)


def parse_humaneval(t: Table) -> list[Prompt]:
    _require(t, "task_id", "prompt", "entry_point", "test")
    prompts = []
    for i, r in enumerate(t.rows):
        code = _text(t, i, "prompt")
        task = str(r["task_id"])
        prompts.append(Prompt(
            id=f"humaneval-{task.removeprefix('HumanEval/')}",
            prompt=f"{INSTRUCTION}\n\n```python\n{code.rstrip()}\n```",
            category="python", label="benign",
            meta={"task_id": task, "code_prompt": code, "test": str(r["test"]), "entry_point": str(r["entry_point"])},
        ))
    return _check(prompts, t)


SPEC = BenchmarkSpec(
    "humaneval", "HumanEval (utility, code): 164 Python functions to complete, run against their tests by the "
    "code-exec judge in a sandbox; label benign", "humaneval/HumanEval.jsonl",
    f"{_GH}/openai/human-eval/{HUMANEVAL_COMMIT}/data/HumanEval.jsonl.gz", parse_humaneval,
    sha256=HUMANEVAL_GZ_SHA256, read=_read_humaneval)
