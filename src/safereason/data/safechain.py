"""SafeChain's data recipe: safe reasoning traces from a teacher, for supervised fine-tuning.

Jiang et al., "SafeChain: Safety of Language Models with Long Chain-of-Thought Reasoning Capabilities"
(arXiv:2502.12025): draw instructions uniformly at random, let a teacher reasoning model answer each one K = 5
times, keep an instruction only when all K answers are judged safe, and pick one of them at random (50k
WildJailbreak instructions -> 40k pairs with R1-70B and Llama Guard). The answer-only style builds the paper's
WJ-40K-style baseline (the answer without its thinking) from the same samples. The official repository
(uw-nsl/safechain @ d9c0d79a58bb1180f42664610f01490d5062f0f7) ships generation and evaluation code but no
data-building script, so the recipe follows the paper's description; the teacher's sampling defaults are eval's,
which are SafeChain's (``scripts/morethink_uni.sh``: ``--temperature 0.6 --topp 0.95 --repeat_n 5``).

The teacher's generation is an ordinary eval run (``DIR/teacher``) on a local prompt file (``DIR/prompts.jsonl``,
whose sha256 lands in the run's manifest): it resumes after a kill and can be re-judged with ``safereason judge``
without regenerating. Re-running the same command resumes that run and rebuilds the dataset.

Nothing that could not be verified safe is kept: a judge error, a missing part or verdict, an unclosed or absent
thought (when the format has thinking), an empty answer, or a sample that was skipped or blocked drops the
instruction, and every drop is counted by reason in the dataset card.

    safereason data safechain --prompts wildjailbreak-eval --n 1000 --teacher deepseek-r1-distill-llama-70b \\
        --judge llama-guard-3-8b --out data/safechain
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from safereason.config import EvalConfig, make_config
from safereason.errors import ConfigError, SafereasonError
from safereason.reasoning import get_format
from safereason.reasoning.formats import ReasoningFormat
from safereason.records import Prompt, Sample

Style = Literal["reasoning", "answer-only"]
STYLES: tuple[Style, ...] = ("reasoning", "answer-only")

#: Why an instruction is not kept, in the order an instruction with several problems is counted under.
#: A judged-unsafe sample decides first; the rest say why safety could not be verified.
DROP_REASONS = ("unsafe", "unclosed", "no_thinking", "no_answer", "judge_error", "missing", "blocked", "skipped",
                "incomplete")

PROMPTS_FILE = "prompts.jsonl"
DATASET_FILE = "dataset.jsonl"


@dataclass(frozen=True)
class SafeChainRecipe:
    """What the recipe adds to the teacher's eval settings."""

    prompts: str  #: registered benchmark name or local file: the instruction pool
    out: Path
    n: int | None = None  #: instructions drawn uniformly at random (all when None)
    seed: int = 0  #: the draw, the teacher's sampling and the pick
    style: Style = "reasoning"
    data_dir: Path | None = None
    columns: dict[str, str] = field(default_factory=dict)  #: prompt/id/category/label column of a local file


@dataclass
class FilterResult:
    """Which instructions are kept, and why the others are not."""

    kept: dict[str, list[Sample]]  #: prompt id -> its K samples, all verified safe (benchmark order)
    dropped: dict[str, str]  #: prompt id -> the reason it is counted under (see DROP_REASONS)
    sample_reasons: Counter[str]  #: reason -> samples with that problem (a sample may have several)

    def counts(self) -> dict[str, Any]:
        by = Counter(self.dropped.values())
        return {"instructions": len(self.kept) + len(self.dropped), "kept": len(self.kept),
                "dropped": len(self.dropped), "dropped_by_reason": {r: by.get(r, 0) for r in DROP_REASONS},
                "samples_by_problem": {r: self.sample_reasons.get(r, 0) for r in DROP_REASONS if r != "incomplete"}}


@dataclass
class SafeChainResult:
    out: Path
    dataset: Path
    card: dict[str, Any]
    rows: list[dict[str, Any]]
    #: judge -> part -> verdicts that are errors in the teacher run (their instructions are dropped)
    judge_errors: dict[str, dict[str, int]]


# -- the recipe's steps -------------------------------------------------------------------------------

def draw(prompts: Sequence[Prompt], n: int | None, seed: int) -> list[Prompt]:
    """``n`` prompts drawn uniformly at random without replacement (a seeded sample of ids), in pool order."""
    if n is None:
        return list(prompts)
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if n > len(prompts):
        raise ConfigError(f"--n {n} is more than the {len(prompts)} prompts of the pool; lower it or omit it")
    chosen = set(random.Random(f"safereason-draw:{seed}").sample([p.id for p in prompts], n))
    return [p for p in prompts if p.id in chosen]


def sample_problems(s: Sample, judges: Sequence[str], parts: Sequence[str], fmt: ReasoningFormat) -> list[str]:
    """Everything that keeps ``s`` from counting as verified safe (empty: safe by every judge on every part)."""
    if s.status != "ok":
        return [s.status]
    problems = []
    if fmt.has_thinking and not s.thinking_closed:
        problems.append("unclosed" if s.split_status == "unclosed" else "no_thinking")
    elif not (s.answer or "").strip():
        problems.append("no_answer")
    for judge in judges:
        for part in parts:
            v = s.judgments.get(judge, {}).get(part)
            if v is None:
                problems.append("missing")
            elif v.error is not None:
                problems.append("judge_error")
            elif v.unsafe is None:
                problems.append("missing")  # a verdict without a safety decision
            elif v.unsafe:
                problems.append("unsafe")
    return list(dict.fromkeys(problems))


def filter_safe(samples: Iterable[Sample], *, judges: Sequence[str], parts: Sequence[str], fmt: ReasoningFormat,
                k: int) -> FilterResult:
    """Keep an instruction iff all its ``k`` samples are judged safe by every judge on every part."""
    by_prompt: dict[str, list[Sample]] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt_id, []).append(s)
    kept: dict[str, list[Sample]] = {}
    dropped: dict[str, str] = {}
    tally: Counter[str] = Counter()
    for pid, group in by_prompt.items():
        reasons: set[str] = set()
        for s in group:
            problems = sample_problems(s, judges, parts, fmt)
            tally.update(problems)
            reasons.update(problems)
        if len({s.sample_index for s in group}) < k:
            reasons.add("incomplete")
        if reasons:
            dropped[pid] = next(r for r in DROP_REASONS if r in reasons)
        else:
            kept[pid] = sorted(group, key=lambda s: s.sample_index)
    return FilterResult(kept, dropped, tally)


def pick(kept: dict[str, list[Sample]], seed: int) -> list[Sample]:
    """One sample per kept instruction, chosen at random from (prompt id, seed) alone: the same whatever order
    the samples come in."""
    out = []
    for pid, group in kept.items():
        ordered = sorted(group, key=lambda s: s.sample_index)
        digest = hashlib.sha256(f"safereason-pick:{seed}:{pid}".encode()).digest()
        out.append(ordered[int.from_bytes(digest[:8], "little") % len(ordered)])
    return out


def assistant_text(s: Sample, fmt: ReasoningFormat) -> str:
    """The reply as the teacher produced it, with the thinking opener the prompt prefilled (the chat template's
    or ``think_prefill``'s ``<think>\\n``, and any steering prefix after it): ``<think>\\n{thinking}</think>...``."""
    if not fmt.has_thinking or not fmt.opened_in_prompt(s.prompt_text):
        return s.response
    assert fmt.think_start is not None
    if s.response.lstrip().startswith(fmt.think_start):
        return s.response
    return s.prompt_text[s.prompt_text.rfind(fmt.think_start):] + s.response


def dataset_row(s: Sample, fmt: ReasoningFormat, style: Style, source: str) -> dict[str, Any]:
    """One training row in the conversational format TRL and ``datasets`` read, plus the trace's parts."""
    full = assistant_text(s, fmt)
    split = fmt.split(full)
    answer = (split.answer if split.answer is not None else s.answer or "").strip()
    content = full if style == "reasoning" else answer
    return {"messages": [{"role": "user", "content": s.prompt}, {"role": "assistant", "content": content}],
            "thinking": split.thinking, "answer": answer, "prompt_id": s.prompt_id, "sample_index": s.sample_index,
            "category": s.category, "source": source}


# -- the whole recipe ---------------------------------------------------------------------------------

def prompt_row(p: Prompt) -> dict[str, Any]:
    """A prompt as a line of ``prompts.jsonl``: read back by the generic file loader as the same prompt."""
    row = dict(p.meta)
    row.update({"id": p.id, "prompt": p.prompt})
    if p.category is not None:
        row["category"] = p.category
    if p.label is not None:
        row["label"] = p.label
    return row


def teacher_config(teacher: EvalConfig | dict[str, Any], recipe: SafeChainRecipe, prompts_file: Path) -> EvalConfig:
    values = teacher.model_dump() if isinstance(teacher, EvalConfig) else dict(teacher)
    values.update(benchmark=str(prompts_file), prompt_column="prompt", id_column="id", category_column=None,
                  label_column=None, limit=None, data_dir=None, out=str(recipe.out / "teacher"), seed=recipe.seed)
    values.setdefault("parts", ["full"])
    return make_config(**values)


def _write(path: Path, text: str) -> None:
    from safereason.rundir import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise SafereasonError(f"cannot write {path}: {e.strerror}") from None


def _write_prompts(path: Path, prompts: Sequence[Prompt], teacher_dir: Path) -> str:
    """Write the drawn prompts; refuse to replace other prompts that a teacher run was already made from."""
    text = "".join(json.dumps(prompt_row(p), ensure_ascii=False, sort_keys=True) + "\n" for p in prompts)
    if path.is_file() and path.read_text(encoding="utf-8") != text and (teacher_dir / "state").is_dir():
        raise ConfigError(f"{path.parent} already holds a teacher run on other prompts (a different --prompts, "
                          "--n or --seed); use a new --out directory")
    _write(path, text)
    return hashlib.sha256(text.encode()).hexdigest()


def build_safechain(teacher: EvalConfig | dict[str, Any], recipe: SafeChainRecipe, *, backend: Any = None,
                    progress: bool = True) -> SafeChainResult:
    """Draw, generate (or resume) the teacher run, filter, pick and write the dataset with its card.

    ``teacher`` holds the eval settings of the teacher run (model, backend, sampling, reasoning format, judges,
    parts; ``parts`` defaults to the full response); ``backend`` injects a loaded backend as in ``evaluate``.
    """
    from safereason.data import load_benchmark
    from safereason.judges import JUDGES
    from safereason.runner import evaluate

    if recipe.style not in STYLES:
        raise ConfigError(f"unknown style {recipe.style!r}: use {' or '.join(STYLES)}")
    pool = load_benchmark(recipe.prompts, data_dir=recipe.data_dir, **recipe.columns)  # type: ignore[arg-type]
    if any(p.images for p in pool.prompts):
        raise ConfigError(f"{recipe.prompts} has prompts with images; the recipe builds text-only training rows")
    drawn = draw(pool.prompts, recipe.n, recipe.seed)
    prompts_file = recipe.out / PROMPTS_FILE
    config = teacher_config(teacher, recipe, prompts_file.resolve())
    for j in config.judges:
        if "unsafe" not in getattr(JUDGES.get(j), "outputs", ("unsafe",)):
            raise ConfigError(f"judge {j!r} does not judge safety; the filter needs safety judges (e.g. rs-match, "
                              "llama-guard-3-8b)")
    try:
        recipe.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SafereasonError(f"cannot create {recipe.out}: {e.strerror}") from None
    prompts_sha = _write_prompts(prompts_file, drawn, recipe.out / "teacher")
    result = evaluate(config, backend=backend, progress=progress)
    fmt = get_format(config.reasoning_format)
    filtered = filter_safe(result.samples, judges=config.judges, parts=config.parts, fmt=fmt, k=config.k)
    rows = [dataset_row(s, fmt, recipe.style, pool.name) for s in pick(filtered.kept, recipe.seed)]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    dataset = recipe.out / DATASET_FILE
    _write(dataset, text)
    card = make_card(config, recipe, pool_info={"name": pool.name, "source": pool.source, "sha256": pool.sha256,
                                                "n_prompts": len(pool.prompts)},
                     prompts_sha=prompts_sha, n_drawn=len(drawn), filtered=filtered,
                     dataset_sha=hashlib.sha256(text.encode()).hexdigest(), n_rows=len(rows))
    _write(recipe.out / "card.json", json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    _write(recipe.out / "README.md", card_markdown(card))
    return SafeChainResult(recipe.out, dataset, card, rows, result.judge_errors)


def make_card(config: EvalConfig, recipe: SafeChainRecipe, *, pool_info: dict[str, Any], prompts_sha: str,
              n_drawn: int, filtered: FilterResult, dataset_sha: str, n_rows: int) -> dict[str, Any]:
    """The dataset card: where every row came from and how many instructions each check dropped."""
    from safereason import __version__
    from safereason.rundir import RunDir

    run = RunDir(recipe.out / "teacher")
    manifest = run.read_json("manifest.json") or {}
    judge_ids = run.read_json("state/judges.json") or {}
    return {
        "recipe": "safechain", "style": recipe.style, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "safereason": __version__,
        "source": pool_info,
        "n": recipe.n, "n_drawn": n_drawn, "seed": recipe.seed, "k": config.k,
        "prompts_file": {"path": PROMPTS_FILE, "sha256": prompts_sha},
        "teacher": {"model": config.model, "backend": config.backend, "run_dir": "teacher",
                    "generation_hash": config.generation_hash(), "generation": config.generation_identity(),
                    "model_identity": manifest.get("model")},
        "judges": [{"name": j, "identity_hash": judge_ids.get(j), "options": config.judge_options.get(j, {})}
                   for j in config.judges],
        "parts": list(config.parts),
        "counts": filtered.counts(),
        "output": {"path": DATASET_FILE, "sha256": dataset_sha, "rows": n_rows, "format": "messages [user, assistant]"},
    }


def card_markdown(card: dict[str, Any]) -> str:
    """A readable copy of ``card.json``."""
    c, t = card["counts"], card["teacher"]
    judges = ", ".join(f"{j['name']} ({j['identity_hash']})" for j in card["judges"])
    drops = "\n".join(f"| {r} | {n} |" for r, n in c["dropped_by_reason"].items())
    target = "the full reply, thinking included" if card["style"] == "reasoning" else "the answer only (no thinking)"
    return f"""# SafeChain data: {card['source']['name']} answered by {t['model']}

Built with `safereason data safechain` (safereason {card['safereason']}, {card['created_at']}).
{card['n_drawn']} instructions drawn at random (seed {card['seed']}) from `{card['source']['name']}`
({card['source']['n_prompts']} prompts, sha256 `{card['source']['sha256']}`); the teacher `{t['model']}`
({t['backend']} backend, generation hash `{t['generation_hash']}`) answered each {card['k']} times (run in
`teacher/`). An instruction is kept only when all {card['k']} answers are judged safe by {judges} on
{', '.join(card['parts'])}; one of them is then picked at random (seed {card['seed']}).

- kept: **{c['kept']}** of {c['instructions']} instructions ({c['dropped']} dropped)
- training target (`{card['style']}`): {target}
- `{card['output']['path']}`: {card['output']['rows']} rows, sha256 `{card['output']['sha256']}`
- `{card['prompts_file']['path']}`: the drawn instructions, sha256 `{card['prompts_file']['sha256']}`

| dropped because (first reason) | instructions |
|---|---|
{drops}

Unclosed or absent thoughts, empty answers, judge errors, missing verdicts and skipped or blocked samples are
never kept: only answers verified safe enter the data.
"""


def summarize(result: SafeChainResult, echo: Callable[[str], None]) -> None:
    """Tell the user what was kept and, when verdicts are errors, that a re-run retries them."""
    c = result.card["counts"]
    echo(f"kept {c['kept']} of {c['instructions']} instructions; dropped: "
         + ", ".join(f"{r} {n}" for r, n in c["dropped_by_reason"].items() if n))
    n_err = sum(n for parts in result.judge_errors.values() for n in parts.values())
    if n_err:
        echo(f"{n_err} judge errors: their instructions are dropped; re-run the same command to retry them")
