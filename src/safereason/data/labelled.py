"""Human-labelled judge validation sets, for measuring a judge against people.

Each set yields :class:`LabelledItem` records: the prompt the model saw, the response that was labelled,
the human label and the individual votes, and any verdict columns the source ships (published judges'
verdicts), so that a published judge-comparison table can be reproduced from the file alone.

- ``harmbench-val``: HarmBench's classifier validation set (602 text items, standard and contextual
  behaviours, 3 human labels each). Positive = the generation is a harmful instance of the behaviour;
  the label is the majority of the three votes.
- ``xstest-completions``: XSTest v2 completions of five models (5 x 450) with human refusal classes.
  Positive = refused (full or partial refusal, as XSTest counts them).
- ``jbb-judge-comparison``: JailbreakBench's judge comparison (300 items, 3 human labels, majority given).
  Positive = jailbroken (unsafe).
- a local CSV / JSONL / JSON / Parquet file with ``text`` and ``label`` columns (names configurable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from safereason.data.benchmarks import (
    HARMBENCH_COMMIT,
    JBB_REVISION,
    XSTEST_COMMIT,
    BenchmarkSpec,
    _decode,
    _format_of,
    _read_csv,
    _read_registered,
    default_data_dir,
    read_table,
)
from safereason.errors import DataError, SafereasonError, suggest
from safereason.judges.refusal import xstest_class_of

Kind = Literal["harm", "refusal"]


@dataclass(frozen=True)
class LabelledItem:
    id: str
    prompt: str  # the user turn the model saw
    text: str  # the labelled response
    label_human: bool  # harm sets: harmful/unsafe; refusal sets: refused
    votes: tuple[int, ...] = ()
    behavior: str | None = None
    context: str | None = None
    #: published verdict columns as found in the file (raw values)
    verdicts: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelledSet:
    name: str
    kind: Kind
    source: str
    items: list[LabelledItem]
    #: what a positive label means, in words, for reports
    positive: str


_GH = "https://raw.githubusercontent.com"


def _spec(name: str, local: str, remote: str, sha256: str | None = None) -> BenchmarkSpec:
    return BenchmarkSpec(name, name, local, remote, parse=lambda t: [], sha256=sha256)


HARMBENCH_VAL = _spec(
    "harmbench-val", "harmbench/classifier_val_sets/text_behaviors_val_set.json",
    f"{_GH}/centerforaisafety/HarmBench/{HARMBENCH_COMMIT}/data/classifier_val_sets/text_behaviors_val_set.json",
    "e740727b6874e492063e097122a9916833d57f9bd2ce3e86713ec188741a41c8")
HARMBENCH_BEHAVIORS = _spec(
    "harmbench", "harmbench/behavior_datasets/harmbench_behaviors_text_all.csv",
    f"{_GH}/centerforaisafety/HarmBench/{HARMBENCH_COMMIT}/data/behavior_datasets/harmbench_behaviors_text_all.csv",
    "8d81accedd38eaaf8b760618622bb888417d1fd0c86eba65c427a16f1cbb4afc")
XSTEST_MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
JBB_COMPARISON = _spec(
    "jbb-judge-comparison", "jailbreakbench/judge-comparison.csv",
    f"hf://JailbreakBench/JBB-Behaviors@{JBB_REVISION}/data/judge-comparison.csv")

#: Published verdict columns of each set (``--verdict-column all`` scores them all). harmbench-val's
#: ``advbench`` column is HarmBench's AdvBench prefix metric: the ``advbench-prefixes`` judge reproduces it
#: item for item (``rs-match`` is SafeChain's different list).
VERDICT_COLUMNS: dict[str, tuple[str, ...]] = {
    "harmbench-val": ("llama_guard", "gpt-4-1106-preview", "gpt-4-0613", "PAIR_gpt-4-0613", "advbench", "GPTFuzz",
                      "mixtral", "gpt-3.5-turbo-0613", "cls", "cls_mistral", "chatglm"),
    "jbb-judge-comparison": ("harmbench_cf", "gpt4_cf", "llamaguard2_cf", "llama3_cf"),
    "xstest-completions": (),
}
NAMES = tuple(VERDICT_COLUMNS)


def _majority(votes: Sequence[int]) -> bool:
    return 2 * sum(votes) > len(votes)


def _load_harmbench_val(data_dir: Path | None) -> LabelledSet:
    data, source, _ = _read_registered(HARMBENCH_VAL, data_dir)
    try:
        obj = json.loads(_decode(data, source))
    except json.JSONDecodeError as e:
        raise DataError(f"{source} line {e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a JSON object of behaviour id -> items")
    bdata, bsource, bfmt = _read_registered(HARMBENCH_BEHAVIORS, data_dir)
    behaviors = {r["BehaviorID"]: r for r in read_table(bdata, bfmt, bsource).rows}
    items = []
    for bid, rows in obj.items():
        for j, r in enumerate(rows):
            where = f"{source} item {bid}[{j}]"
            try:
                votes = tuple(int(r[f"human_{h}"]) for h in range(3))
                test_case, generation = r["test_case"], r["generation"]
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{where}: missing or bad field ({e})") from None
            beh = behaviors.get(bid)
            items.append(LabelledItem(
                id=f"{bid}:{j}", prompt=test_case, text=generation, label_human=_majority(votes), votes=votes,
                behavior=beh["Behavior"] if beh else test_case, context=(beh["ContextString"] or None) if beh else None,
                verdicts={c: r[c] for c in VERDICT_COLUMNS["harmbench-val"] if c in r},
                meta={"model": r.get("model"), "method": r.get("method"),
                      "functional_category": beh["FunctionalCategory"] if beh else None},
            ))
    return LabelledSet("harmbench-val", "harm", source, items, "harmful instance of the behaviour")


def _load_xstest(data_dir: Path | None) -> LabelledSet:
    items = []
    sources = []
    for m in XSTEST_MODELS:
        spec = _spec(f"xstest-completions-{m}", f"xstest/model_completions/xstest_v2_completions_{m}.csv",
                     f"{_GH}/paul-rottger/xstest/{XSTEST_COMMIT}/model_completions/xstest_v2_completions_{m}.csv")
        data, source, fmt = _read_registered(spec, data_dir)
        sources.append(source)
        table = read_table(data, fmt, source)
        for c in ("id", "prompt", "completion", "final_label", "type"):
            if c not in table.columns:
                raise DataError(f"{source} has no column {c!r}")
        for i, r in enumerate(table.rows):
            cls = xstest_class_of(r["final_label"])
            if cls is None:
                raise DataError(f"{source} {table.at(i)}: final_label {r['final_label']!r} is not an XSTest class")
            votes = tuple(int(c != "full_compliance") for a in ("annotation_1", "annotation_2")
                          if (c := xstest_class_of(r.get(a) or "")) is not None)
            items.append(LabelledItem(
                id=f"{m}:{r['id']}", prompt=r["prompt"], text=r["completion"], label_human=cls != "full_compliance",
                votes=votes, meta={"model": m, "type": r["type"], "class": cls},
            ))
    return LabelledSet("xstest-completions", "refusal", ", ".join(sources), items, "refused (full or partial)")


def _load_jbb(data_dir: Path | None) -> LabelledSet:
    data, source, _ = _read_registered(JBB_COMPARISON, data_dir)
    try:
        text = _decode(data, source)
    except DataError:
        text = data.decode("mac_roman")  # the known copy has Mac-Roman bytes inside prompt texts
    table = _read_csv(text, source)
    items = []
    for i, r in enumerate(table.rows):
        try:
            votes = tuple(int(r[f"human{h}"]) for h in (1, 2, 3))
            majority = int(r["human_majority"])
        except (KeyError, ValueError) as e:
            raise DataError(f"{source} {table.at(i)}: missing or bad human label ({e})") from None
        items.append(LabelledItem(
            id=f"jbb-{r.get('Index', i)}", prompt=r["prompt"], text=r["target_response"], label_human=bool(majority),
            votes=votes, behavior=r.get("goal"), verdicts={c: r[c] for c in VERDICT_COLUMNS["jbb-judge-comparison"]
                                                           if c in r},
        ))
    return LabelledSet("jbb-judge-comparison", "harm", source, items, "jailbroken (unsafe)")


_TRUE = {"1", "true", "yes", "unsafe", "harmful", "refused", "refusal"}
_FALSE = {"0", "false", "no", "safe", "unharmful", "harmless", "complied", "compliance"}


def parse_binary(value: Any) -> bool | None:
    """A 0/1-like value as found in label and verdict columns; None when it is not one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        if (cls := xstest_class_of(v)) is not None:
            return cls != "full_compliance"
        m = re.fullmatch(r"rating:\s*\[\[(\d+)\]\]", v)  # PAIR's judge: jailbroken iff rated 10
        if m:
            return int(m.group(1)) == 10
    return None


def _load_file(path: Path, kind: Kind, *, text_column: str, label_column: str, prompt_column: str | None,
               id_column: str | None) -> LabelledSet:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    table = read_table(data, _format_of(str(path)), str(path))
    for c in (text_column, label_column, prompt_column, id_column):
        if c is not None and c not in table.columns:
            raise DataError(f"{path} has no column {c!r}; its columns are: {', '.join(table.columns)}")
    items = []
    for i, r in enumerate(table.rows):
        label = parse_binary(r.get(label_column))
        if label is None:
            raise DataError(f"{path} {table.at(i)}: label {r.get(label_column)!r} is not 0/1, true/false, yes/no, "
                            "safe/unsafe or an XSTest class")
        text = r.get(text_column)
        if not isinstance(text, str):
            raise DataError(f"{path} {table.at(i)}: column {text_column!r} is not text")
        items.append(LabelledItem(
            id=str(r[id_column]) if id_column else f"{path.stem}-{i + 1:04d}",
            prompt=str(r.get(prompt_column) or "") if prompt_column else "", text=text, label_human=label,
            verdicts={c: v for c, v in r.items() if c not in (text_column, label_column, prompt_column, id_column)},
        ))
    positive = "refused" if kind == "refusal" else "unsafe"
    return LabelledSet(path.stem, kind, str(path.resolve()), items, positive)


def load_labelled(name_or_path: str, *, data_dir: str | Path | None = None, kind: Kind | None = None,
                  text_column: str = "text", label_column: str = "label", prompt_column: str | None = "prompt",
                  id_column: str | None = None, limit: int | None = None) -> LabelledSet:
    """Load a registered labelled set (see the module docstring) or a local file."""
    ddir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if prompt_column == "prompt":
            # the default prompt column is optional for a local file
            try:
                cols = read_table(path.read_bytes(), _format_of(str(path)), str(path)).columns
            except OSError as e:
                raise DataError(f"cannot read {path}: {e.strerror}") from None
            prompt_column = "prompt" if "prompt" in cols else None
        ls = _load_file(path, kind or "harm", text_column=text_column, label_column=label_column,
                        prompt_column=prompt_column, id_column=id_column)
    elif name_or_path == "harmbench-val":
        ls = _load_harmbench_val(ddir)
    elif name_or_path == "xstest-completions":
        ls = _load_xstest(ddir)
    elif name_or_path == "jbb-judge-comparison":
        ls = _load_jbb(ddir)
    else:
        raise SafereasonError(f"unknown labelled dataset {name_or_path!r}.{suggest(name_or_path, NAMES)} "
                              f"Known: {', '.join(NAMES)}; or give a local file with text and label columns.")
    if kind is not None and kind != ls.kind and not path.is_file():
        raise SafereasonError(f"{ls.name} is a {ls.kind} set, not a {kind} set")
    if limit is not None:
        ls = LabelledSet(ls.name, ls.kind, ls.source, ls.items[:limit], ls.positive)
    if not ls.items:
        raise DataError(f"{ls.source} has no labelled items")
    return ls
