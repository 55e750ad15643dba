"""The card's battery as stages: each an ordinary run dir (or attack dir) under the card dir.

``plan(cfg)`` lists the stages; ``run_stages`` runs them in order, each resumable as its command is (an eval run
dir resumes after a kill, an attack file per behaviour), and records per stage in ``DIR/state.json`` its status,
wall time and, when it failed, the reason. A failing stage never stops the others; the card marks its section
missing with that reason and the command that resumes it.

Layout: ``prompts/<set>.jsonl`` (the drawn prompts; their sha256 lands in each run's manifest), ``base/<stage>/``
and, with a defense, ``defended/<stage>/`` (eval run dirs), ``attacks/<name>/adversarial.jsonl``,
``agreement/<judge>.<set>.json``.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safereason.card.config import CardConfig, PresetSizes
from safereason.errors import SafereasonError

Echo = Callable[[str], None]
VARIANTS = ("base", "defended")
#: section of each eval stage (benign sets are ``benign-<set>``)
SECTIONS = {"harmful": "harmful", "xstest": "overrefusal", "prefill": "robustness", "tars-adversarial": "robustness",
            "rainbow-teaming": "robustness", "gcg": "robustness", "pair": "robustness", "math": "utility",
            "code": "utility"}
#: the labelled sets each kind of judge is checked on (``judge-agreement``): JailbreakBench's for safety judges,
#: since harmbench-val is smol-guard's training set (agreement there would be in-sample)
AGREEMENT_SETS = {"unsafe": "jbb-judge-comparison", "refused": "xstest-completions"}


@dataclass
class Stage:
    """One step of the battery: an eval run dir, an attack file, or a judge-agreement result."""

    name: str  #: unique in the card: ``base/harmful``, ``attack/prefill``, ``agreement/rs-match``
    kind: str  #: eval, prompts, attack, agreement
    section: str
    run: Callable[[], None]
    path: Path
    needs: list[str] = field(default_factory=list)
    source_set: str | None = None  #: the benchmark the prompts were drawn from
    variant: str | None = None


def eval_done(run_dir: Path) -> bool:
    from safereason.recipes.safechain import eval_done as done

    return done(run_dir)


def section_of(stage: str) -> str:
    return "overrefusal" if stage.startswith("benign-") else SECTIONS[stage]


def resume_command(cfg: CardConfig) -> str:
    return f"safereason card --config {cfg.out / 'card.yaml'}"


# -- prompts and eval settings -------------------------------------------------------------------------------

def draw_prompts(cfg: CardConfig, name: str, n: int | None, *, label: str | None = None) -> Path:
    """``n`` prompts of ``name`` (only those labelled ``label``) drawn with the card's seed, in prompts/."""
    from safereason.data import load_benchmark
    from safereason.data.safechain import draw, prompt_row
    from safereason.rundir import atomic_write_text

    prompts = load_benchmark(name, data_dir=cfg.data_dir).prompts
    if label is not None:
        prompts = [p for p in prompts if p.label == label]
    chosen = draw(prompts, min(n, len(prompts)) if n is not None else None, cfg.seed)
    path = cfg.out / "prompts" / f"{name}.jsonl"
    text = "".join(json.dumps(prompt_row(p), ensure_ascii=False, sort_keys=True) + "\n" for p in chosen)
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def embedded_eval_options(model: str | None) -> dict[str, Any]:
    """The embedded chat model is asked to think as the demo asks it; other models use their own presets."""
    from safereason.demo import DEMO_SYSTEM_PROMPT

    if model == "smollm2-135m":
        return {"reasoning_format": "r1", "system_prompt": DEMO_SYSTEM_PROMPT, "think_prefill": "<think>\n"}
    return {}


def eval_values(cfg: CardConfig, sizes: PresetSizes, benchmark: Path, out: Path, *, judges: list[str],
                parts: list[str], k: int, max_new_tokens: int, defended: bool) -> dict[str, Any]:
    """The eval config of one stage (every key the card does not set is eval's default)."""
    values: dict[str, Any] = {
        "model": cfg.model or "default", "benchmark": str(benchmark), "k": k, "max_new_tokens": max_new_tokens,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed, "batch_size": sizes.batch_size,
        "judges": judges, "parts": parts, "n_bootstrap": cfg.n_bootstrap, "out": str(out),
        "judge_options": {j: o for j, o in cfg.judge_options.items() if j in judges},
        **embedded_eval_options(cfg.model), **cfg.eval_options,
    }
    if cfg.endpoint is not None:
        # a provider's blocked prompts are recorded (status blocked: counted, never a refusal), not a failed batch
        values.update(backend="openai", backend_options={"base_url": cfg.endpoint, "on_blocked": "record",
                                                         **cfg.backend_options})
    elif cfg.backend_options:
        values["backend_options"] = dict(cfg.backend_options)
    for key in ("data_dir", "device", "dtype"):
        if getattr(cfg, key) is not None:
            values[key] = getattr(cfg, key)
    if defended and cfg.defense is not None:
        values.update(defense=cfg.defense, defense_options=dict(cfg.defense_options))
    return values


# -- backends ------------------------------------------------------------------------------------------------

class Backends:
    """One loaded local model shared by every eval stage (``given`` injects one: tests, notebooks)."""

    def __init__(self, cfg: CardConfig, given: Any = None) -> None:
        self.cfg, self.given, self.loaded = cfg, given, None

    def factory(self) -> Any:
        if self.given is not None or self.cfg.endpoint is not None:
            return self.given  # the endpoint's backend is built by eval from the config

        def build() -> Any:
            if self.loaded is None:
                from safereason.models import build_backend

                kw = {k: v for k, v in (("device", self.cfg.device), ("dtype", self.cfg.dtype)) if v is not None}
                self.loaded = build_backend("transformers", str(self.cfg.model), **kw, **self.cfg.backend_options)
            return self.loaded

        return build


# -- the state file ------------------------------------------------------------------------------------------

def read_state(out: Path) -> dict[str, Any]:
    try:
        state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"stages": {}}
    return state if isinstance(state, dict) and isinstance(state.get("stages"), dict) else {"stages": {}}


def record(out: Path, name: str, status: str, seconds: float, error: str | None = None) -> None:
    """Add this invocation's wall time to the stage's and set its status (and the reason it failed)."""
    from safereason.rundir import atomic_write_text

    state = read_state(out)
    entry = state["stages"].setdefault(name, {"seconds": 0.0})
    entry.update(status=status, seconds=round(float(entry.get("seconds", 0.0)) + seconds, 1), error=error)
    atomic_write_text(out / "state.json", json.dumps(state, indent=2) + "\n")


def describe_error(e: BaseException) -> str:
    """One line: what failed, for the card (a SafereasonError's message as it is, else type and message)."""
    if isinstance(e, SafereasonError):
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}"


def run_stages(stages: list[Stage], out: Path, echo: Echo) -> dict[str, str]:
    """Run every stage in order; a failure (or a failed prerequisite) is recorded and the next stage runs."""
    status: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for i, st in enumerate(stages, 1):
        failed = [n for n in st.needs if status.get(n) != "done"]
        if failed:
            reason = "; ".join(f"needs stage {n}, which failed: {reasons.get(n, 'not run')}" for n in failed)
            reasons[st.name] = reason
            echo(f"[{i}/{len(stages)}] {st.name}: skipped ({reason})")
            record(out, st.name, "failed", 0.0, reason)
            status[st.name] = "failed"
            continue
        echo(f"[{i}/{len(stages)}] {st.name}")
        started = time.monotonic()
        try:
            st.run()
        except Exception as e:
            reason = describe_error(e)
            reasons[st.name] = reason
            echo(f"  failed: {reason}")
            record(out, st.name, "failed", time.monotonic() - started, reason)
            status[st.name] = "failed"
            continue
        record(out, st.name, "done", time.monotonic() - started)
        status[st.name] = "done"
    return status


def stage_map(stages: list[Stage]) -> Mapping[str, Stage]:
    return {s.name: s for s in stages}
