"""Generation for an eval run: the fixed batch plan, the checks before the first token, and batch-by-batch logging.

Reproducibility comes from the *fixed batch plan*: the (prompt, sample) rows are ordered by prompt length and cut
into batches of ``batch_size`` rows; batch ``b`` is always generated from the same rows with the seed derived from
(run seed, b). A batch is logged in one write, and a half-logged batch is dropped and regenerated, so an
interrupted and resumed run yields exactly the records of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from safereason.config import EvalConfig
from safereason.defenses import Defense, build_defense
from safereason.errors import ConfigError, RunDirError
from safereason.models import Backend, Completion, SamplingParams, build_backend
from safereason.progress import progress_bar
from safereason.reasoning import get_format
from safereason.reasoning.controls import images_of, more_think
from safereason.reasoning.formats import ReasoningFormat
from safereason.records import Prompt, Sample
from safereason.rendering import check_rendering, render_prompt
from safereason.rundir import RunDir
from safereason.validation import context_limit, count_within_context

BackendArg = Backend | Callable[[], Backend] | None


@dataclass(frozen=True)
class Row:
    prompt_index: int
    sample_index: int


def batch_plan(prompts: Sequence[Prompt], k: int, batch_size: int) -> list[list[Row]]:
    """Rows ordered longest prompt first (less padding, and out-of-memory shows up at once)."""
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i].prompt), i))
    rows = [Row(i, s) for i in order for s in range(k)]
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def batch_seed(seed: int, batch_index: int) -> int:
    digest = hashlib.sha256(f"safereason:{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Prepared:
    """The generation left to do, with everything it needs checked before the first token."""

    plan: list[list[Row]]
    todo: list[int]
    backend: Backend | None = None
    fmt: ReasoningFormat | None = None
    defense: Defense | None = None
    prompt_texts: list[str] = field(default_factory=list)
    n_prompt_tokens: list[int] = field(default_factory=list)
    #: prompt index -> why it is not generated (too long for the context, on_long_prompt=skip)
    skipped: dict[int, str] = field(default_factory=dict)
    #: the backend's identity, to record in state/model.json once the run starts (None: keep the stored one)
    model_id: dict[str, Any] | None = None


def build_eval_backend(config: EvalConfig, backend: BackendArg) -> Backend:
    if backend is None:
        options = dict(config.backend_options)
        if config.backend == "openai":
            options.pop("max_model_len", None)  # read by the context check; the server enforces its own
        return build_backend(config.backend, config.model, device=config.device, dtype=config.dtype,
                             chat_template=config.chat_template, **options)
    if not hasattr(backend, "generate"):
        return backend()  # a factory: build (or fetch from a cache) only now that work is left
    return backend


def _todo(run: RunDir, plan: list[list[Row]]) -> tuple[list[int], bool]:
    """Batches not fully logged (a half-logged batch's rows are dropped: it is regenerated whole), and whether
    any batch was already done."""
    logged = run.generations.read()
    by_batch: dict[int, list[dict[str, Any]]] = {}
    for rec in logged:
        by_batch.setdefault(rec["batch"], []).append(rec)
    done = {b for b, recs in by_batch.items() if b < len(plan) and len(recs) == len(plan[b])}
    if len(done) != len(by_batch):
        run.generations.rewrite([r for r in logged if r["batch"] in done])
    return [b for b in range(len(plan)) if b not in done], bool(done)


def prepare(config: EvalConfig, run: RunDir, prompts: list[Prompt], *, backend: BackendArg) -> Prepared:
    """Load the backend (only when generation is left) and check the model, template and every prompt's length
    before anything about this start is written: a failed start leaves the run dir as it was."""
    plan = batch_plan(prompts, config.k, config.batch_size)
    todo, done = _todo(run, plan)
    if not todo:
        return Prepared(plan, todo)
    backend = build_eval_backend(config, backend)
    model_id = backend.identity()
    stored = run.read_json("state/model.json")
    keys = ("model_hash", "tokenizer_hash", "chat_template_hash")
    if done and stored is not None and any(stored.get(k) != model_id.get(k) for k in keys):
        raise RunDirError(
            f"run dir {run.path} was generated with different model weights, tokenizer or chat template "
            f"than {config.model!r} has now; use a new --out directory"
        )
    fmt = get_format(config.reasoning_format)
    defense = build_defense(config.defense, config.defense_options) if config.defense else None
    check_rendering(backend, config, model=config.model, defense=defense)
    prompt_texts = [render_prompt(backend, config, p.prompt, defense=defense, images=p.images, meta=p.meta)
                    for p in prompts]
    limit = context_limit(backend, config.backend_options)
    n_prompt_tokens, long = count_within_context(backend, [p.id for p in prompts], prompt_texts,
                                                 max_new_tokens=config.max_new_tokens, limit=limit)
    reasons = {i: lp.reason(config.max_new_tokens, limit or 0) for i, lp in sorted(long.items())}
    if reasons and config.on_long_prompt == "error":
        raise ConfigError(f"{next(iter(reasons.values()))} ({len(reasons)} prompt(s) too long); shorten it, lower "
                          "--max-new-tokens, or pass --on-long-prompt skip to record such prompts as skipped")
    return Prepared(plan, todo, backend, fmt, defense, prompt_texts, n_prompt_tokens, reasons,
                    model_id=model_id if stored is None or not done else None)


def unanswered(b: int, r: Row, p: Prompt, prompt_text: str, n_prompt_tokens: int, status: str, reason: str,
               control: dict[str, Any] | None = None) -> dict[str, Any]:
    """The log record of a sample with no response: skipped before generation, or blocked by the provider."""
    sample = Sample(
        prompt_id=p.id, sample_index=r.sample_index, prompt=p.prompt, category=p.category, label=p.label,
        prompt_text=prompt_text, response="", thinking=None, answer=None, thinking_closed=False,
        split_status="no_thinking", finish_reason="blocked" if status == "blocked" else None,
        n_prompt_tokens=n_prompt_tokens, n_response_tokens=0, meta=p.meta, control=control or {},
        images=list(p.images), status=status, status_reason=reason,  # type: ignore[arg-type]
    )
    return {"batch": b, "prompt_index": r.prompt_index, "sample": sample.model_dump(mode="json", exclude={"judgments"})}


@dataclass
class _Batches:
    """One start's generation: what each batch is given and how it is logged."""

    config: EvalConfig
    run: RunDir
    prompts: list[Prompt]
    prep: Prepared
    params: SamplingParams

    @property
    def backend(self) -> Backend:
        assert self.prep.backend is not None
        return self.prep.backend

    def log(self, b: int, rows: list[Row], completions: list[Completion], controls: list[dict[str, Any]]) -> None:
        """Log batch ``b`` in one write: the generated ``rows`` and, in plan order, its skipped rows."""
        prep, fmt = self.prep, self.prep.fmt
        assert fmt is not None
        by_row = dict(zip(rows, zip(completions, controls, strict=True), strict=True))
        ok = [(r, c) for r, (c, _) in by_row.items() if c.finish_reason != "blocked"]
        splits = {r: fmt.split(c.text, prep.prompt_texts[r.prompt_index]) for r, c in ok}
        counts = iter(self.backend.count_tokens([t for s in splits.values() for t in (s.thinking or "",
                                                                                        s.answer or "")]))
        records = []
        for r in prep.plan[b]:
            p, text, n_prompt = self.prompts[r.prompt_index], prep.prompt_texts[r.prompt_index], \
                prep.n_prompt_tokens[r.prompt_index]
            if r not in by_row:
                records.append(unanswered(b, r, p, text, n_prompt, "skipped", prep.skipped[r.prompt_index]))
                continue
            c, ctl = by_row[r]
            if c.finish_reason == "blocked":
                records.append(unanswered(b, r, p, text, n_prompt, "blocked",
                                          c.text.strip()[:500] or "the provider blocked the request", ctl))
                continue
            s = splits[r]
            n_think, n_ans = next(counts), next(counts)
            sample = Sample(
                prompt_id=p.id, sample_index=r.sample_index, prompt=p.prompt, category=p.category,
                label=p.label, prompt_text=text, response=c.text, thinking=s.thinking, answer=s.answer,
                thinking_closed=s.thinking_closed, split_status=s.status, finish_reason=c.finish_reason,
                n_prompt_tokens=n_prompt, n_response_tokens=c.n_tokens,
                n_thinking_tokens=n_think if s.thinking is not None else None,
                n_answer_tokens=n_ans if s.answer is not None else None, meta=p.meta, control=ctl,
                images=list(p.images),
            )
            records.append({"batch": b, "prompt_index": r.prompt_index,
                            "sample": sample.model_dump(mode="json", exclude={"judgments"})})
        self.run.generations.append(records)

    def generate(self, b: int, rows: list[Row]) -> tuple[list[Completion], list[dict[str, Any]]]:
        """Batch ``b``'s completions and per-sample control records: through the defense, MoreThink or plain."""
        config, defense, backend = self.config, self.prep.defense, self.backend
        texts = [self.prep.prompt_texts[r.prompt_index] for r in rows]
        images = [self.prompts[r.prompt_index].images for r in rows]
        every = list(range(len(rows)))
        keys = [f"{self.prompts[r.prompt_index].id}:{r.sample_index}" for r in rows]
        seed = batch_seed(config.seed, b)
        if defense is not None and defense.generates:
            try:
                outs = defense.generate(backend, texts, [self.prompts[r.prompt_index].prompt for r in rows],
                                        self.params, seed, fmt=self.prep.fmt, keys=keys, **images_of(images, every))
            except BaseException:
                defense.close()
                raise
            return [o.completion for o in outs], [o.control for o in outs]
        if config.thinking == "more":
            more = more_think(backend, texts, self.params, seed, fmt=self.prep.fmt, keys=keys,
                              rounds=config.think_rounds, budget=config.think_budget, rethink=config.rethink_strings,
                              images=images, budget_mode=config.morethink_budget)
            return [m.completion for m in more], [m.control() for m in more]  # the budgets each sample used
        return backend.generate(texts, self.params, seed, **images_of(images, every)), [{} for _ in rows]

    def scale_out(self, todo: list[int], live: dict[int, list[Row]], advance: Callable[[int], None]) -> None:
        """Scale-out backends (Ray) take every batch at once; batches are logged as they finish."""
        jobs = [(b, [self.prep.prompt_texts[r.prompt_index] for r in live[b]], self.params,
                 batch_seed(self.config.seed, b)) for b in todo if live[b]]
        for b in todo:
            if not live[b]:  # every row of the batch is skipped: nothing to generate
                self.log(b, [], [], [])
                advance(b)
        for b, completions in self.backend.generate_batches(jobs):  # type: ignore[attr-defined]
            self.log(b, live[b], completions, [{} for _ in live[b]])
            advance(b)


def generate(config: EvalConfig, run: RunDir, prompts: list[Prompt], prep: Prepared, *,
             progress: bool) -> list[dict[str, Any]]:
    """Generate the batches left (``prep.todo``), logging each as it finishes; returns every logged record."""
    plan, todo = prep.plan, prep.todo
    if not todo:
        return run.generations.read()
    assert prep.backend is not None and prep.fmt is not None
    if prep.model_id is not None:
        run.write_json("state/model.json", prep.model_id)
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                            max_new_tokens=config.max_new_tokens, stop=tuple(config.stop), ignore_eos=config.ignore_eos)
    batches = _Batches(config, run, prompts, prep, params)
    defense = prep.defense
    plain = (defense is None or not defense.generates) and config.thinking != "more"
    with progress_bar(progress) as bar:
        total = sum(len(b) for b in plan)
        task = bar.add_task("generating", total=total, completed=total - sum(len(plan[b]) for b in todo))

        def advance(b: int) -> None:
            bar.advance(task, len(plan[b]))

        live = {b: [r for r in plan[b] if r.prompt_index not in prep.skipped] for b in todo}
        if plain and not any(p.images for p in prompts) and hasattr(prep.backend, "generate_batches"):
            batches.scale_out(todo, live, advance)
            todo = []
        for b in todo:
            if live[b]:
                batches.log(b, live[b], *batches.generate(b, live[b]))
            else:  # every row of the batch is skipped: nothing to generate
                batches.log(b, [], [], [])
            advance(b)
    if defense is not None:
        defense.close()
    return run.generations.read()
