"""The harmful and adversarial prompts of TARS's RL mixes (Kim et al., 2025, "Reasoning as an Adaptive Defense for
Safety"), as one static attack set: ``tars-adversarial``.

TARS's five λ mixes (``tars-lambda-*``) draw their harmful rows from three sources, tagged in ``ability``:
WildJailbreak (vanilla and adversarial harmful, with WildJailbreak's reference refusal), Rainbow-Teaming-style
archive prompts (``rainbow``) and Aegis 2.0 unsafe prompts (``aegis``). This set is every such row of the five
files, de-duplicated by prompt text (1795 distinct prompts): category = the source, label harmful. Ids are
``tars-adversarial-<source>-<index>`` (TARS's own ``extra_info.index`` of the prompt's first row, so they do not
depend on file order); meta holds the λ files the prompt is in and the first row's other fields. The dataset
hash is a listing of the five files' sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from safereason.data.fetch import _GH, _is_url, _listing, _read_registered
from safereason.data.sets.tars import COMMIT, HARMFUL_ABILITIES, LAMBDAS, SHA256
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Row, Table, _check, _meta, _read_parquet, _require, _text
from safereason.records import Prompt

REMOTE = f"{_GH}/danielkty/tars/{COMMIT}/data"
#: sha256 of the sha256sum-style listing of the five λ files (pins the whole set)
LISTING_SHA256 = "d084fc986b2cc596bcb374fa23896aa38977ac1da5a66ffe5c671226e90224fe"


def _read(spec: BenchmarkSpec, data_dir: Path | None) -> tuple[bytes, str, Table]:
    """Every harmful row of the five λ files, first occurrence of each prompt kept, files in λ order."""
    files: dict[str, str] = {}
    sources: set[str] = set()
    rows: list[Row] = []
    first: dict[str, Row] = {}
    for lam in LAMBDAS:
        name = f"train_lambda_{lam}.parquet"
        part = replace(spec, local_path=f"tars/data/{name}", remote=f"{REMOTE}/{name}", sha256=SHA256[name],
                       read=None)
        data, source, _ = _read_registered(part, data_dir)
        files[name] = hashlib.sha256(data).hexdigest()
        local = data_dir is not None and not _is_url(source)
        sources.add(str((data_dir / "tars" / "data").resolve()) if local else REMOTE)
        table = _read_parquet(data, source)
        _require(table, "prompt", "ability", "extra_info")
        for i, r in enumerate(table.rows):
            if r["ability"] not in HARMFUL_ABILITIES:
                continue
            text = _text(table, i, "prompt")
            if text in first:
                first[text]["lambdas"].append(lam)
                continue
            row = {**r, "prompt": text, "lambdas": [lam]}
            first[text] = row
            rows.append(row)
    source = " + ".join(sorted(sources))
    columns = tuple(dict.fromkeys(k for r in rows for k in r))
    return _listing(files), source, Table(source, columns, rows)


def parse(t: Table) -> list[Prompt]:
    _require(t, "prompt", "ability", "extra_info")
    prompts = []
    for i, r in enumerate(t.rows):
        info = r["extra_info"] if isinstance(r["extra_info"], dict) else {}
        prompts.append(Prompt(id=f"tars-adversarial-{r['ability']}-{info.get('index', i)}",
                              prompt=_text(t, i, "prompt"), category=r["ability"], label="harmful",
                              meta=_meta(r, "prompt", "ability")))
    return _check(prompts, t)


SPEC = BenchmarkSpec("tars-adversarial", "TARS RL mixes' harmful/adversarial prompts, de-duplicated across the λ "
                     "files: 1795 (WildJailbreak 732, Rainbow 714, Aegis 349), category = source",
                     "tars/data", REMOTE, parse, sha256=LISTING_SHA256, read=_read)
