"""Pick SafeThink's steering prefix offline: short-horizon safety on harmful prompts vs drift on benign ones.

SafeThink injects a prefix s ("Wait, think safely.") at the start of a reasoning step that looks unsafe. A
good s makes the tokens that follow it safe, and changes the model's behaviour on benign prompts as little
as possible. Both are estimated here, per candidate s:

* **safety**: on N harmful prompts, R rollouts of H sampled tokens after s, injected at the start of the
  first reasoning step (the rendered prompt with the thinking block opened, then s, as exact ids); each
  rollout is judged by a safety judge, and safety is the share judged safe (judge errors are left out and
  counted). The 95% CI is a bootstrap over prompts (rollouts of one prompt are not independent).
* **KL**: on M benign prompts, the model's own continuation y of H tokens *without* s, then the mean over
  positions and prompts of KL(p(. | prompt, y<t) || p(. | prompt, s, y<t)): how far s pushes the
  next-token distributions away from what the model would do anyway.

Candidates are ranked by ``score = safety - lam * KL``; the empty prefix (no steering) is the baseline.

Pairing: ``Backend.generate_ids`` takes one seed per call, so the rollout rows (prompt, rollout index) are cut
into the same batches for every candidate, and a batch's seed is derived from the run seed and the
(prompt id, rollout index) keys of its rows, never from the candidate. Identical prefixes therefore give
identical rollouts, different ones share their random draws, and the bootstrap resamples the same prompts
for all candidates (so ``delta``, safety minus the baseline's, has a paired CI).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from safereason.defenses.steer_outputs import result_table, safethink_config, write_outputs
from safereason.defenses.steer_results import (
    CandidateResult,
    PromptSafety,
    SteerSearchResult,
    bootstrap_ci,
    mean_kl,
    paired_delta_ci,
    rank_candidates,
)
from safereason.errors import ConfigError, DataError
from safereason.judges.base import Judge, JudgeItem, identity_hash
from safereason.models.base import Backend, SamplingParams
from safereason.records import Prompt

# results and outputs live in steer_results / steer_outputs; callers keep importing them from here
__all__ = ["JUDGED_PARTS", "KL_CHUNK", "CandidateResult", "JudgedPart", "PromptSafety", "SteerSearchResult",
           "check_candidates", "rank_candidates", "read_candidates", "result_table", "safethink_config",
           "split_sets", "steer_search", "write_outputs"]

#: what the judge sees of a rollout: the trace so far incl. s (as SafeThink's scorer sees it), the whole
#: rollout incl. s and any answer, or only the sampled tokens (a prefix cannot then game the judge itself)
JudgedPart = Literal["thinking", "full", "generated"]
JUDGED_PARTS: tuple[str, ...] = ("thinking", "full", "generated")
#: benign prompts scored per token_logprobs call: each holds [horizon, vocab] float64 log-probs
KL_CHUNK = 4


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


# -- inputs ----------------------------------------------------------------------------------------

def check_candidates(candidates: Sequence[str], where: str = "candidates") -> list[str]:
    """Non-empty, non-blank, distinct prefixes (a duplicate would only repeat work and split ranks)."""
    out: list[str] = []
    for i, c in enumerate(candidates):
        if not isinstance(c, str):
            raise ConfigError(f"{where}: candidate {i + 1} is a {type(c).__name__}, not text")
        if not c.strip():
            raise ConfigError(f"{where}: candidate {i + 1} is blank (the empty prefix is always run as the baseline)")
        if c in out:
            raise ConfigError(f"{where}: duplicate candidate {c!r} (candidates {out.index(c) + 1} and {i + 1})")
        out.append(c)
    if not out:
        raise ConfigError(f"{where}: no candidate prefixes")
    return out


def read_candidates(path: str | Path) -> list[str]:
    """Prefixes from a text file (one per line, stripped; blank lines and ``#`` comments skipped) or from a
    YAML / JSON list of strings (exact strings: use it for a prefix with edge spaces or starting with #)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read candidates file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"candidates file {path} is not UTF-8 text") from None
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = yaml.safe_load(text)  # JSON is YAML
        except yaml.YAMLError as e:
            raise ConfigError(f"candidates file {path} is not valid YAML/JSON: {str(e).splitlines()[0]}") from None
        if data is None:
            data = []
        if not isinstance(data, list):
            raise ConfigError(f"candidates file {path} must hold a list of prefixes, not a {type(data).__name__}")
        return check_candidates(data, str(path))
    lines = [line.strip() for line in text.splitlines()]
    return check_candidates([s for s in lines if s and not s.startswith("#")], str(path))


def split_sets(harmful: Sequence[Prompt], benign: Sequence[Prompt], *, harmful_name: str = "harmful set",
               benign_name: str = "benign set", limit: int | None = None,
               benign_limit: int | None = None) -> tuple[list[Prompt], list[Prompt]]:
    """The harmful prompts (all but those labelled benign) and the benign ones (those labelled benign, or
    all of an unlabelled set), each cut to its limit; one mixed set such as ``smoke`` can serve as both."""
    h = [p for p in harmful if p.label != "benign"]
    b = [p for p in benign if p.label == "benign"] if any(p.label for p in benign) else list(benign)
    if not h:
        raise DataError(f"{harmful_name} has no harmful prompts (all are labelled benign)")
    if not b:
        raise DataError(f"{benign_name} has no benign prompts (none is labelled benign)")
    for n, what in ((limit, "--limit"), (benign_limit, "--benign-limit")):
        if n is not None and n < 1:
            raise ConfigError(f"{what} must be at least 1, got {n}")
    return h[:limit], b[:benign_limit]


# -- the search ------------------------------------------------------------------------------------
def steer_search(backend: Backend, harmful: Sequence[Prompt], benign: Sequence[Prompt], candidates: Sequence[str],
                 judge: Judge, *, rollouts: int = 4, horizon: int = 64, lam: float = 1.0, temperature: float = 0.7,
                 top_p: float = 0.95, benign_temperature: float = 0.0, seed: int = 0,
                 system_prompt: str | None = None, think_prefill: str | None = "<think>\n", fmt: str = "r1",
                 part: JudgedPart = "thinking", batch_size: int = 16, judge_batch_size: int = 32,
                 n_bootstrap: int = 1000, progress: bool = False) -> SteerSearchResult:
    """Score each candidate prefix (and the empty baseline) by safety - lam * KL; see the module docstring.

    ``backend`` must have ``token_logprobs`` (the transformers backend). Prompts are rendered exactly as
    ``safereason eval`` renders them with the same ``system_prompt`` / ``think_prefill`` / ``fmt``, so the
    winner transfers to an eval run with those settings. ``benign_temperature`` 0 makes the benign
    continuations greedy (the model's most likely behaviour).
    """
    from safereason.progress import progress_bar as _progress

    harmful, benign = list(harmful), list(benign)
    prefixes = _check_inputs(backend, judge, candidates, harmful, benign, rollouts=rollouts, horizon=horizon,
                             lam=lam, temperature=temperature, top_p=top_p, benign_temperature=benign_temperature,
                             part=part, batch_size=batch_size, judge_batch_size=judge_batch_size,
                             n_bootstrap=n_bootstrap)
    s = _setup(backend, harmful, benign, prefixes, seed=seed, rollouts=rollouts, batch_size=batch_size,
               system_prompt=system_prompt, think_prefill=think_prefill, fmt=fmt)
    params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=horizon)
    b_params = SamplingParams(temperature=benign_temperature, top_p=top_p, max_new_tokens=horizon)
    n_cand = len(s.labels)
    with _progress(progress) as bar:
        gen_task = bar.add_task("rollouts (candidates x prompts x rollouts)", total=n_cand * len(s.rows))
        kl_task = bar.add_task("benign KL (candidates x prompts)", total=(n_cand - 1) * len(benign))
        tallies, rollout_log = _judge_rollouts(backend, judge, harmful, s, params, part, horizon, judge_batch_size,
                                               lambda n: bar.advance(gen_task, n))
        kl, conts = _benign_kl(backend, s, b_params, horizon, lambda n: bar.advance(kl_task, n))

    idx = (np.random.default_rng(_seed(seed, "steer-search-bootstrap")).integers(
        0, len(harmful), size=(n_bootstrap, len(harmful))) if n_bootstrap else None)
    results = _candidate_results(s, harmful, tallies, kl, idx)
    rank_candidates(results[0], results[1:], lam)

    settings = {
        "rollouts": rollouts, "horizon": horizon, "lam": lam, "temperature": temperature, "top_p": top_p,
        "benign_temperature": benign_temperature, "seed": seed, "system_prompt": system_prompt,
        "think_prefill": think_prefill, "reasoning_format": fmt, "part": part, "batch_size": batch_size,
        "n_bootstrap": n_bootstrap, "judge": getattr(judge, "name", type(judge).__name__),
        "judge_identity": identity_hash(judge), "model": backend.identity(),
        "harmful_ids": [p.id for p in harmful], "benign_ids": [p.id for p in benign],
        "candidates": prefixes,
    }
    seeds = {
        "rollout_batches": [{"seed": sd, "rows": [f"{harmful[pi].id}:{r}" for pi, r in b]}
                            for b, sd in zip(s.batches, s.batch_seeds, strict=True)],
        "benign_batches": [{"seed": sd, "prompts": [benign[i].id for i in b]}
                           for b, sd in zip(s.b_batches, s.b_seeds, strict=True)],
        "bootstrap": _seed(seed, "steer-search-bootstrap"),
        "benign_continuation_tokens": [len(y) for y in conts],
    }
    return SteerSearchResult(baseline=results[0], candidates=results[1:], settings=settings, seeds=seeds,
                             rollouts=rollout_log)


def _check_inputs(backend: Backend, judge: Judge, candidates: Sequence[str], harmful: list[Prompt],
                  benign: list[Prompt], *, rollouts: int, horizon: int, lam: float, temperature: float, top_p: float,
                  benign_temperature: float, part: str, batch_size: int, judge_batch_size: int,
                  n_bootstrap: int) -> list[str]:
    """Refuse, before any model call, what the search cannot run; return the checked candidate prefixes."""
    if not callable(getattr(backend, "token_logprobs", None)):
        raise ConfigError(f"steer-search needs next-token log-probabilities, which only the transformers backend "
                          f"gives; backend {getattr(backend, 'name', type(backend).__name__)!r} has none "
                          "(use --backend transformers)")
    if "unsafe" not in getattr(judge, "outputs", ("unsafe",)):
        raise ConfigError(f"steer-search needs a safety judge; {getattr(judge, 'name', judge)!r} only judges refusals")
    prefixes = check_candidates(candidates)
    if rollouts < 1 or horizon < 1 or batch_size < 1 or judge_batch_size < 1 or n_bootstrap < 0:
        raise ConfigError("steer-search needs rollouts, horizon and batch sizes >= 1 and n_bootstrap >= 0")
    if lam < 0:
        raise ConfigError(f"lam must be >= 0 (a weight on the KL penalty), got {lam}")
    if temperature < 0 or benign_temperature < 0 or not 0 < top_p <= 1:
        raise ConfigError("temperatures must be >= 0 and top_p in (0, 1]")
    if part not in JUDGED_PARTS:
        raise ConfigError(f"unknown judged part {part!r}; use {', '.join(JUDGED_PARTS)}")
    for name, ps in (("harmful", harmful), ("benign", benign)):
        if not ps:
            raise DataError(f"steer-search needs at least one {name} prompt")
        ids = [p.id for p in ps]
        if len(set(ids)) != len(ids):
            raise DataError(f"{name} prompt ids must be unique (they seed the rollouts)")
        if any(getattr(p, "images", None) for p in ps):
            raise DataError("steer-search is text-only; a prompt has images")
    return prefixes


@dataclass
class _Setup:
    """Rendered prompts as ids, the prefixes (index 0: the empty baseline), and the seeded batches."""

    rf: Any  # the reasoning format, which splits a rollout's thinking from its answer
    h_texts: list[str]
    h_base: list[list[int]]
    b_base: list[list[int]]
    labels: list[str]
    prefix_ids: list[list[int]]
    rows: list[tuple[int, int]]  # (harmful prompt index, rollout index)
    batches: list[list[tuple[int, int]]]
    batch_seeds: list[int]
    b_batches: list[list[int]]
    b_seeds: list[int]
    eos: int | None


def _setup(backend: Backend, harmful: list[Prompt], benign: list[Prompt], prefixes: list[str], *, seed: int,
           rollouts: int, batch_size: int, system_prompt: str | None, think_prefill: str | None,
           fmt: str) -> _Setup:
    """Render the prompts as eval does, and cut rows into batches whose seeds depend on the rows only."""
    from safereason.config import make_config
    from safereason.reasoning import get_format
    from safereason.rendering import render_prompt

    cfg = make_config(system_prompt=system_prompt, think_prefill=think_prefill or None, reasoning_format=fmt)
    rf = get_format(fmt)
    h_texts = [render_prompt(backend, cfg, p.prompt) for p in harmful]
    b_texts = [render_prompt(backend, cfg, p.prompt) for p in benign]
    if rf.has_thinking and not rf.opened_in_prompt(h_texts[0]):
        raise ConfigError(f"the rendered prompt does not open a {rf.think_start} block, so a prefix would not start a "
                          f"reasoning step; set think_prefill (e.g. {rf.think_start!r} + newline) or use a model "
                          "whose chat template opens it")
    rows = [(pi, r) for pi in range(len(harmful)) for r in range(rollouts)]
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    b_batches = [list(range(i, min(i + batch_size, len(benign)))) for i in range(0, len(benign), batch_size)]
    return _Setup(
        rf=rf, h_texts=h_texts, h_base=[backend.encode(t) for t in h_texts],
        b_base=[backend.encode(t) for t in b_texts], labels=["", *prefixes],
        prefix_ids=[[], *(backend.encode(s) for s in prefixes)], rows=rows, batches=batches,
        batch_seeds=[_seed(seed, "steer-search", *(f"{harmful[pi].id}:{r}" for pi, r in b)) for b in batches],
        b_batches=b_batches,
        b_seeds=[_seed(seed, "steer-search-benign", *(benign[i].id for i in b)) for b in b_batches],
        eos=getattr(backend, "eos_ids", [None])[0],
    )


def _judge_rollouts(backend: Backend, judge: Judge, harmful: list[Prompt], s: _Setup, params: SamplingParams,
                    part: str, horizon: int, judge_batch_size: int,
                    advance: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Roll out every prefix on the harmful prompts and judge the rollouts; tallies [safe, judged, errors] of
    shape (3, candidates, prompts), and one log entry per rollout."""
    tallies = np.zeros((3, len(s.labels), len(harmful)), dtype=np.int64)
    rollout_log: list[dict[str, Any]] = []
    for c, (label, pids) in enumerate(zip(s.labels, s.prefix_ids, strict=True)):
        texts: list[str] = []
        for b, bseed in zip(s.batches, s.batch_seeds, strict=True):
            outs = backend.generate_ids([s.h_base[pi] + pids for pi, _ in b], params, bseed)
            for (pi, _), out in zip(b, outs, strict=True):
                gen = list(out.token_ids)[:horizon]
                whole = backend.decode(pids + gen)
                if part == "generated":
                    text = backend.decode(gen)
                elif part == "full":
                    text = whole
                else:
                    split = s.rf.split(whole, s.h_texts[pi])
                    text = split.thinking if split.thinking is not None else whole
                texts.append(text)
            advance(len(b))
        items = [JudgeItem(prompt=harmful[pi].prompt, text=t if t.strip() else "(empty)")
                 for (pi, _), t in zip(s.rows, texts, strict=True)]
        verdicts = []
        for i in range(0, len(items), judge_batch_size):
            verdicts += judge.judge(items[i:i + judge_batch_size])
        if len(verdicts) != len(items):
            raise ConfigError(f"judge {getattr(judge, 'name', judge)!r} returned {len(verdicts)} verdicts "
                              f"for {len(items)} items")
        for (pi, r), t, v in zip(s.rows, texts, verdicts, strict=True):
            failed = v.error is not None or v.unsafe is None
            tallies[:, c, pi] += ((not failed) and not v.unsafe, not failed, failed)
            rollout_log.append({"prefix_index": c - 1 if c else None, "prefix": label,
                                "prompt_id": harmful[pi].id, "rollout": r, "text": t,
                                "unsafe": None if failed else bool(v.unsafe), "error": v.error})
    return tallies, rollout_log


def _benign_kl(backend: Backend, s: _Setup, params: SamplingParams, horizon: int,
               advance: Any) -> tuple[np.ndarray, list[list[int]]]:
    """KL (candidates, benign prompts) of each prefix against the model's own continuations, a chunk of prompts
    at a time (full-vocab log-probs are [horizon, vocab] per prompt); and those continuations."""
    kl = np.zeros((len(s.labels), len(s.b_base)))
    conts: list[list[int]] = []
    for b, bseed in zip(s.b_batches, s.b_seeds, strict=True):
        outs = backend.generate_ids([s.b_base[i] for i in b], params, bseed)
        chunk = []
        for out in outs:
            y = list(out.token_ids)[:horizon]
            if out.stopped_by == "eos" and len(y) < horizon and s.eos is not None:
                y.append(s.eos)  # the model's choice to stop is part of its behaviour, and scores like a token
            chunk.append(y)
        conts += chunk
        for j in range(0, len(b), KL_CHUNK):
            sub, ys = b[j:j + KL_CHUNK], chunk[j:j + KL_CHUNK]
            without = backend.token_logprobs([s.b_base[i] for i in sub], ys)  # type: ignore[attr-defined]
            for c in range(1, len(s.labels)):
                with_s = backend.token_logprobs([s.b_base[i] + s.prefix_ids[c] for i in sub], ys)  # type: ignore
                for i, lw, lq in zip(sub, without, with_s, strict=True):
                    kl[c, i] = mean_kl(lw, lq)
                advance(len(sub))
    return kl, conts


def _candidate_results(s: _Setup, harmful: list[Prompt], tallies: np.ndarray, kl: np.ndarray,
                       idx: np.ndarray | None) -> list[CandidateResult]:
    """Per prefix (baseline first): safety with its bootstrap CI, KL, and the paired delta against the baseline."""
    safe, judged, errors = tallies
    results = []
    for c in range(len(s.labels)):
        n_j = int(judged[c].sum())
        results.append(CandidateResult(
            prefix=s.labels[c], index=c - 1 if c else None, prefix_tokens=len(s.prefix_ids[c]),
            safety=float(safe[c].sum() / n_j) if n_j else None, safety_ci=bootstrap_ci(safe[c], judged[c], idx),
            n_judged=n_j, n_errors=int(errors[c].sum()), kl=float(kl[c].mean()), kl_per_prompt=kl[c].tolist(),
            per_prompt=[PromptSafety(p.id, int(safe[c, i]), int(judged[c, i]), int(errors[c, i]))
                        for i, p in enumerate(harmful)],
        ))
    base = results[0]
    for c, res in enumerate(results):
        if res.safety is not None and base.safety is not None:
            res.delta = res.safety - base.safety
            res.delta_ci = paired_delta_ci(safe[c], judged[c], safe[0], judged[0], idx)
    return results
