"""SafeThink: monitor the first reasoning steps with a safety scorer and steer unsafe ones back.

The trace is generated step by step (a step ends at ``delimiter``, default a blank line, or after
``max_step_tokens``). After each of the first ``max_steps`` (m) steps the scorer judges (prompt, trace so
far); safety = 1 - P(unsafe) (a judge without a probability gives 0 or 1). When safety < ``threshold`` (tau),
the step is re-generated from the trace before it plus the steering prefix (``prefix``, s), up to
``attempts`` (B) times; the first candidate with safety >= tau is kept, else the last one (satisficing, not
maximising). After step m the model continues unmonitored to the end of its thinking and answer.

Defaults are ours, since the paper's exact values are not public: s = "Wait, think safely.", tau = 0.5,
m = 3, B = 4. With m = 0 the output is exactly the undefended output (same seed, same ids).

All steps are batched across the prompts and samples of a batch; each continuation extends the exact ids
generated so far. Four implementations of the same rule (``mode``): ``session`` decodes token by token on
one KV cache and rewinds only the failing row (no waiting, no prefix re-read; transformers, text prompts);
``chunked`` extends all rows by fixed chunks per batched call and rewinds only failing rows (any backend);
``speculative`` drafts whole continuations and re-drafts failing rows (no trigger: exactly the undefended
call); ``stepwise`` makes one batched call per step (the reference the others are tested against). ``auto``
picks session where the backend has it, else chunked.

A scorer error stops the run (it is resumable) rather than letting a step pass unmonitored. What happened
is recorded per sample in ``control``: the step boundaries (character offsets into the response) with their
safety, and each intervention (step, prefix, attempts, safety per attempt); the injected prefix stays visible
in the response and the thinking.

Layout: this module holds the defense (options, scorer, mode dispatch); :mod:`.session` the session and
chunked modes (and the streaming hook ``on_progress``), :mod:`.stepwise` and :mod:`.speculative` the others,
:mod:`.common` what they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safereason.defenses.base import DEFENSES, Defense, DefenseOutput
from safereason.defenses.safethink.common import DEFAULT_PREFIX, MODES, DefenseError, Progress, _ids_through, _seed
from safereason.defenses.safethink.session import generate_session
from safereason.defenses.safethink.speculative import generate_speculative, steps_in
from safereason.defenses.safethink.stepwise import generate_stepwise
from safereason.errors import ConfigError
from safereason.models.base import Backend, SamplingParams
from safereason.reasoning.formats import ReasoningFormat

__all__ = ["DEFAULT_PREFIX", "MODES", "DefenseError", "Progress", "SafeThinkDefense", "_ids_through", "_seed",
           "generate_session", "generate_speculative", "generate_stepwise", "steps_in"]


class SafeThinkDefense(Defense):
    name = "safethink"
    generates = True
    #: ``generate`` takes ``on_progress`` (streaming; see :mod:`.session`)
    streams = True

    def __init__(self, scorer: str = "rs-match", scorer_options: dict[str, Any] | None = None,
                 prefix: str = DEFAULT_PREFIX, threshold: float = 0.5, max_steps: int = 3, attempts: int = 4,
                 delimiter: str = "\n\n", max_step_tokens: int = 128, mode: str = "auto",
                 chunk_tokens: int | None = None) -> None:
        from safereason.judges import JUDGES

        factory = JUDGES.get(scorer)
        if "unsafe" not in getattr(factory, "outputs", ("unsafe",)):
            raise ConfigError(f"safethink scorer {scorer!r} is a refusal judge; it needs a safety judge")
        if not prefix.strip():
            raise ConfigError("safethink needs a non-empty steering prefix")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"safethink threshold must be in [0, 1], got {threshold}")
        if max_steps < 0 or attempts < 1 or max_step_tokens < 1:
            raise ConfigError("safethink needs max_steps >= 0, attempts >= 1 and max_step_tokens >= 1")
        if not delimiter:
            raise ConfigError("safethink needs a non-empty step delimiter")
        if mode not in MODES:
            raise ConfigError(f"safethink mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.scorer_name, self.scorer_options = scorer, dict(scorer_options or {})
        self.prefix, self.threshold, self.max_steps, self.attempts = prefix, threshold, max_steps, attempts
        self.delimiter, self.max_step_tokens = delimiter, max_step_tokens
        if chunk_tokens is not None and chunk_tokens < 1:
            raise ConfigError("safethink chunk_tokens must be >= 1")
        self.mode, self.chunk_tokens = mode, chunk_tokens
        self._scorer: Any = None

    def identity(self) -> dict[str, Any]:
        from safereason.judges import build_judge, identity_hash

        return {"name": self.name, "scorer": self.scorer_name,
                "scorer_identity": identity_hash(build_judge(self.scorer_name, self.scorer_options)),
                "prefix": self.prefix, "threshold": self.threshold, "max_steps": self.max_steps,
                "attempts": self.attempts, "delimiter": self.delimiter, "max_step_tokens": self.max_step_tokens,
                "mode": self.mode, "chunk_tokens": self.chunk_tokens}

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from safereason.judges import build_judge

            self._scorer = build_judge(self.scorer_name, self.scorer_options)
        return self._scorer

    def close(self) -> None:
        if self._scorer is not None:
            from safereason.judges import close_judge

            close_judge(self._scorer)
            self._scorer = None

    def safety(self, prompts: Sequence[str], traces: Sequence[str]) -> list[float]:
        """1 - P(unsafe) per (prompt, trace); any scorer error raises, it never passes as safe."""
        from safereason.judges import JudgeItem

        verdicts = self.scorer.judge([JudgeItem(prompt=p, text=t if t.strip() else "(empty)")
                                      for p, t in zip(prompts, traces, strict=True)])
        out = []
        for v in verdicts:
            if v.error is not None or v.unsafe is None:
                raise DefenseError(f"safethink scorer {self.scorer_name!r} failed: {v.error or 'no verdict'}; "
                                   "the batch was not recorded (re-run to resume)")
            out.append(1.0 - (v.score if v.score is not None else float(v.unsafe)))
        return out

    def generate(self, backend: Backend, prompt_texts: Sequence[str], user_prompts: Sequence[str],
                 params: SamplingParams, seed: int, *, fmt: ReasoningFormat, keys: Sequence[str],
                 images: Sequence[Sequence[str]] | None = None,
                 on_progress: Progress | None = None) -> list[DefenseOutput]:
        """``on_progress(row, settled_ids, settled, flagged)`` streams what is settled as it grows (session and
        chunked modes; the others report each row once, at the end); raising from it stops the generation."""
        mode = self.resolve_mode(backend, images)
        if mode in ("session", "chunked"):
            chunk = None if mode == "session" else self.chunk_tokens or self.max_step_tokens
            return generate_session(self, backend, prompt_texts, user_prompts, params, seed, fmt=fmt, keys=keys,
                                    images=images if chunk else None, chunk=chunk, on_progress=on_progress)
        if mode == "speculative":
            outs = generate_speculative(self, backend, prompt_texts, user_prompts, params, seed, fmt=fmt,
                                        images=images)
        else:
            outs = generate_stepwise(self, backend, prompt_texts, user_prompts, params, seed, fmt=fmt, images=images)
        if on_progress is not None:
            for i, out in enumerate(outs):
                on_progress(i, list(out.completion.token_ids), True,
                            any(not iv.get("accepted") for iv in out.control["interventions"]))
        return outs

    def resolve_mode(self, backend: Backend, images: Sequence[Sequence[str]] | None = None) -> str:
        """``auto``: a decode session where the backend has one (transformers, text only), else chunked."""
        can = bool(getattr(backend, "supports_session", False)) and not (images and any(images))
        if self.mode == "auto":
            return "session" if can else "chunked"
        if self.mode == "session" and not can:
            raise ConfigError(f"safethink mode 'session' needs a backend with decode sessions (transformers, "
                              f"text only); {getattr(backend, 'name', type(backend).__name__)!r} has none: "
                              "use mode=chunked")
        return self.mode


DEFENSES.add("safethink", SafeThinkDefense)
