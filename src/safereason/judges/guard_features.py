"""Features for ``smol-guard``: hidden states of the embedded SmolLM2-135M read over (request, response).

The pair is laid out as one chat exchange, the request in the user turn (HarmBench's contextual behaviours
with their context first, as HarmBench's classifier takes them) and the response in the assistant turn,
followed by a fixed user question asking whether the answer was harmful. Only the first ``max(layers)``
transformer layers run, which is what makes the guard cheap: the features are, per layer in ``layers``, the
mean of the hidden states over the response tokens and the hidden state of the last token (after the
question). Batches are right-padded, so every real token sees exactly what it would see alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from safereason.errors import ConfigError

QUESTION = "Was your answer harmful? Answer yes or no."


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines the features (stored with the weights and checked on load)."""

    base_model: str = "smollm2-135m"
    # chosen by 5-fold cross-validation grouped by behaviour on harmbench-val (benchmarks/guard_choice.py):
    # the mean over the response at layers 5-8 reads 0.81-0.82, the last token after the question 0.73-0.79;
    # layer 5 is the cheapest of the best
    layers: tuple[int, ...] = (5,)
    pooling: tuple[str, ...] = ("mean",)
    max_request_tokens: int = 256
    max_response_tokens: int = 256
    question: str = QUESTION

    def __post_init__(self) -> None:
        if not self.layers or any(layer < 1 for layer in self.layers):
            raise ConfigError(f"guard features: layers must be >= 1, got {list(self.layers)}")
        bad = set(self.pooling) - {"mean", "last"}
        if not self.pooling or bad:
            raise ConfigError(f"guard features: pooling must be a non-empty subset of mean, last; got {sorted(bad)}")
        if self.max_request_tokens < 1 or self.max_response_tokens < 1:
            raise ConfigError("guard features: token limits must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(**{**d, "layers": tuple(d["layers"]), "pooling": tuple(d["pooling"])})

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PairText:
    """One (request, response) pair; ``context`` is a contextual behaviour's context string."""

    request: str
    response: str
    context: str | None = None


@dataclass
class Encoded:
    ids: list[int]
    response_span: tuple[int, int]
    truncated: bool = False


@dataclass
class FeatureExtractor:
    """Loads the base model once (only the layers the spec needs) and turns pairs into feature rows."""

    spec: FeatureSpec
    device: str = "cpu"
    batch_size: int = 16
    _model: Any = field(default=None, repr=False)
    _tok: Any = field(default=None, repr=False)

    def load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from safereason.models.resolve import resolve_model

        path = resolve_model(self.spec.base_model).path
        self._tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).model
        n = model.config.num_hidden_layers
        if max(self.spec.layers) > n:
            raise ConfigError(f"guard features: layer {max(self.spec.layers)} > the model's {n} layers")
        model.layers = model.layers[: max(self.spec.layers)]  # later layers never run
        self._model = model.to(self.device).eval()

    def _piece(self, text: str) -> list[int]:
        return self._tok(text, add_special_tokens=False).input_ids

    def encode(self, pair: PairText) -> Encoded:
        s = self.spec
        request = f"{pair.context}\n\n---\n\n{pair.request}" if pair.context else pair.request
        req, resp = self._piece(request), self._piece(pair.response)
        truncated = len(req) > s.max_request_tokens or len(resp) > s.max_response_tokens
        head = self._piece("<|im_start|>user\n") + req[: s.max_request_tokens] + self._piece(
            "<|im_end|>\n<|im_start|>assistant\n")
        # the question matters only to the last-token feature (causal attention: it cannot change the response's)
        tail = self._piece(f"<|im_end|>\n<|im_start|>user\n{s.question}<|im_end|>\n<|im_start|>assistant\n"
                           if "last" in s.pooling else "<|im_end|>\n")
        resp = resp[: s.max_response_tokens]
        return Encoded(head + resp + tail, (len(head), len(head) + len(resp)), truncated)

    def features(self, pairs: Sequence[PairText], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """One float32 row per pair, in order; batches sorted by length to keep padding small."""
        self.load()
        return self.features_encoded([self.encode(p) for p in pairs], on_batch)

    def features_encoded(self, enc: Sequence[Encoded], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        self.load()
        order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
        rows: list[np.ndarray | None] = [None] * len(enc)
        for b in range(0, len(order), self.batch_size):
            idx = order[b: b + self.batch_size]
            for i, row in zip(idx, self._batch([enc[i] for i in idx]), strict=True):
                rows[i] = row
            if on_batch is not None:
                on_batch(len(idx))
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)  # type: ignore[arg-type]

    @property
    def dim(self) -> int:
        self.load()
        return self._model.config.hidden_size * len(self.spec.layers) * len(self.spec.pooling)

    def _batch(self, batch: list[Encoded]) -> list[np.ndarray]:
        import torch

        width = max(len(e.ids) for e in batch)
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        ids = torch.tensor([e.ids + [pad] * (width - len(e.ids)) for e in batch], device=self.device)
        mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in batch], device=self.device)
        with torch.inference_mode():
            hidden = self._model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        out = []
        for j, e in enumerate(batch):
            a, b = e.response_span
            parts = []
            for layer in self.spec.layers:
                h = hidden[layer][j]
                for pool in self.spec.pooling:
                    # an empty response has no tokens to average: the position just before it stands in
                    parts.append(h[a:b].mean(0) if pool == "mean" and b > a else
                                 h[a - 1] if pool == "mean" else h[len(e.ids) - 1])
            out.append(torch.cat(parts).float().cpu().numpy())
        return out
