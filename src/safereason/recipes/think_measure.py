"""``recipe think``'s last stages: export the adapter, measure the merged model, write ``CARD.md``.

The measure loads the base merged with the *exported* adapter (float16 by default) through the same merge the
``smollm2-135m-think`` alias uses, so the card's numbers are those of the shipped model, not of the float32 weights
training ended with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safereason.recipes.think_config import ThinkRecipeConfig

Echo = Callable[[str], None]


def export_adapter(src: Path, dest: Path, dtype: str) -> Path:
    """``dest``: the LoRA tensors of ``src`` (peft's ``adapter/``) in ``dtype`` with their config; atomic."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from safereason.models.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    tensors = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_file(str(src / ADAPTER_WEIGHTS)).items()}
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    cfg = json.loads((src / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = None  # the base is the recipe's; the alias names it
    (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def measure_all(cfg: ThinkRecipeConfig, runs: list[dict[str, Any]], merged: Path, given: Mapping[str, Any],
                progress: bool, echo: Echo) -> None:
    """Merge the exported adapter into the base (as the alias does), then run the measuring evals."""
    from safereason.models.adapters import merge_lora
    from safereason.models.resolve import resolve_model
    from safereason.recipes.safechain import _evaluate_all

    if "tuned" not in given:
        merge_lora(Path(resolve_model(cfg.base).path), cfg.out / "adapter", merged)
    backend = given.get("tuned")
    if backend is None:
        from safereason.models import build_backend

        loaded: dict[str, Any] = {}

        def backend() -> Any:
            if "b" not in loaded:
                loaded["b"] = build_backend("transformers", str(merged), device=cfg.device, dtype="float32")
            return loaded["b"]

    _evaluate_all(runs, backend, progress, echo)


# -- what the samples show ---------------------------------------------------------------------------

def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def copies_thought(thinking: str, answer: str) -> bool:
    """The answer repeats the thought: its words are (almost) all the thought's, or it is inside the thought."""
    a, t = _words(answer), _words(thinking)
    if not a:
        return False
    return answer.strip().lower() in thinking.lower() or len(a & t) / len(a) >= 0.9


def sample_stats(run_dir: Path) -> dict[str, Any]:
    """Closure, answer quality and refusals over a run's samples (refusals among samples with an answer)."""
    n = closed = answered = copied = refused_xs = refused_rs = 0
    by_label: dict[str, dict[str, int]] = {}
    for line in (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip() or (s := json.loads(line)).get("status", "ok") != "ok":
            continue
        n += 1
        closed += bool(s.get("thinking_closed"))
        answer = (s.get("answer") or "").strip()
        if not s.get("thinking_closed") or not answer:
            continue
        answered += 1
        copied += copies_thought(s.get("thinking") or "", answer)
        verdicts = s.get("judgments", {})
        xs = bool((verdicts.get("refusal-string", {}).get("answer") or {}).get("refused"))
        rs = (verdicts.get("rs-match", {}).get("answer") or {}).get("unsafe") is False
        refused_xs, refused_rs = refused_xs + xs, refused_rs + rs
        lb = by_label.setdefault(s.get("label") or "unlabelled", {"answered": 0, "refused_xstest": 0,
                                                                   "refused_rs_match": 0})
        lb["answered"] += 1
        lb["refused_xstest"] += xs
        lb["refused_rs_match"] += rs
    return {"samples": n, "closed": closed, "answered": answered, "copies_thought": copied,
            "refused_xstest": refused_xs, "refused_rs_match": refused_rs, "by_label": by_label}


def _frac(a: int, b: int) -> str:
    return f"{a / b:.2f} ({a}/{b})" if b else "n/a"


def write_card(cfg: ThinkRecipeConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``OUT/card.json`` and ``OUT/CARD.md``: data, training and measured numbers."""
    from safereason.hashing import sha256_file
    from safereason.models.adapters import ADAPTER_WEIGHTS
    from safereason.recipes.safechain import _state
    from safereason.rundir import atomic_write_text

    data = json.loads((cfg.out / "data" / "card.json").read_text(encoding="utf-8"))
    sft = json.loads((cfg.out / "sft" / "result.json").read_text(encoding="utf-8"))
    weights = cfg.out / "adapter" / ADAPTER_WEIGHTS
    measures = {Path(v["out"]).name: sample_stats(Path(v["out"])) for v in runs}
    card = {"recipe": "think", "config": cfg.identity(), "data": data,
            "sft": {"steps": sft["steps"], "final_loss": sft["final_loss"]},
            "adapter": {"file": ADAPTER_WEIGHTS, "sha256": sha256_file(weights), "bytes": weights.stat().st_size},
            "measures": measures, "stages": _state(cfg.out).get("stages", {})}
    atomic_write_text(cfg.out / "card.json", json.dumps(card, indent=2) + "\n")
    atomic_write_text(cfg.out / "CARD.md", card_markdown(cfg, card))
    return measures


def card_markdown(cfg: ThinkRecipeConfig, card: dict[str, Any]) -> str:
    d, m = card["data"], card["measures"]
    rows = []
    for name, s in m.items():
        benign = s["by_label"].get("benign", {})
        harmful = s["by_label"].get("harmful", {})
        rows.append(f"| {name} | {_frac(s['closed'], s['samples'])} | {_frac(s['answered'], s['samples'])} | "
                    f"{s['copies_thought']} | {_frac(benign.get('refused_xstest', 0), benign.get('answered', 0))} | "
                    f"{_frac(harmful.get('refused_rs_match', 0), harmful.get('answered', 0))} |")
    stages = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in card["stages"].items())
    return f"""# {cfg.base}-think: a LoRA adapter that makes `{cfg.base}` think, then answer

Made by `safereason recipe think` (seed {cfg.seed}); re-running it with the same settings rebuilds it.

## Data
- prompts: `{d['prompts']['source']}` ({d['prompts']['rows']} rows, sha256 `{d['prompts']['sha256']}`): requests
  written for safereason (everyday questions, how-tos, writing tasks, math word problems, borderline and harmful
  requests); none is from an evaluated benchmark (checked by `tests/recipes/test_think_disjoint.py`).
- thought: rule-built per prompt (a restatement and a plan; math problems carry the worked computation).
- answer: math problems a rule-built answer; every other prompt the teacher `{cfg.teacher or cfg.base}`'s own plain
  chat reply (no system prompt, temperature {cfg.teacher_temperature}, at most {cfg.teacher_max_new_tokens} new
  tokens, a cut reply trimmed to its last full sentence), kept whatever it says: safety is not filtered.
- rows: **{d['rows']}** ({d['by_label']['benign']} benign, {d['by_label']['harmful']} harmful; of the harmful,
  {d['harmful_answers_refusing_rs_match']} answers refuse by rs-match); dropped: {d['dropped'] or 'none'};
  `data/dataset.jsonl` sha256 `{d['sha256']}`.
- target: `<think>\\n{{thought}}\\n</think>\\n{{answer}}<|im_end|>` after the chat template (no system prompt,
  no prefill).

## Training
LoRA (r {cfg.lora_r}, alpha {cfg.lora_alpha}, dropout 0, on {', '.join(cfg.lora_target_modules)}) through
`safereason train sft` (TRL SFTTrainer): {cfg.epochs:g} epochs, lr {cfg.lr}, batch {cfg.train_batch_size}, seed
{cfg.seed}: {card['sft']['steps']} steps, last logged loss {card['sft']['final_loss']}. Adapter
`{card['adapter']['file']}` ({cfg.adapter_dtype}, {card['adapter']['bytes'] / 1e6:.2f} MB, sha256
`{card['adapter']['sha256']}`).

## Measured (the merged shipped adapter; K {cfg.measure_k} on smoke, 1 on XSTest; {cfg.measure_max_new_tokens} new
tokens, temperature {cfg.measure_temperature}, seed {cfg.seed}, no system prompt)

| run | thought closes | closed with an answer | answers copying the thought | benign answers refused \
(XSTest strings) | harmful answers refused (rs-match) |
|---|---|---|---|---|---|
{chr(10).join(rows)}

`smoke`: the demo's prompts with the `<think>\\n` prefill; `smoke-no-prefill`: the same without it; `xstest`: XSTest's
first {cfg.n_xstest if cfg.n_xstest is not None else 'all'} safe prompts with the prefill. Refusals are counted over
samples that closed their thought with a non-empty answer. Wall time: {stages or 'n/a'}.
"""
