"""A local sequence-classification reward model as a batched helpfulness scorer (TARS's GRM-Llama3-8B-distill)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from safereason.errors import ConfigError

log = logging.getLogger(__name__)


class RewardModelScorer:
    """A local sequence-classification reward model: sigmoid of the first logit of (user prompt, answer) in
    the reward model's own chat template, as TARS scored with GRM-Llama3-8B-distill
    (danielkty/tars verl/verl/workers/fsdp_workers.py @ 32c10be, _switch_chat_template / get_refusal_score)."""

    def __init__(self, path: str, device: str | None = None, batch_size: int = 8, max_length: int = 4096,
                 dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
        except Exception as e:
            raise ConfigError(f"cannot load reward model {path!r}: {e}") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length, self.path = batch_size, max_length, path

    def _render(self, prompt: str, answer: str) -> str:
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
        return f"{prompt}\n\n{answer}"

    def __call__(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        import torch

        out: list[float | None] = []
        for i in range(0, len(answers), self.batch_size):
            texts = [self._render(p, a) for p, a in zip(prompts[i:i + self.batch_size],
                                                         answers[i:i + self.batch_size], strict=True)]
            try:
                enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length, add_special_tokens=False).to(self.device)
                with torch.inference_mode():
                    logits = self.model(**enc).logits[:, 0].float()
                scores = torch.sigmoid(logits).tolist()
                out.extend(s if math.isfinite(s) else None for s in scores)
            except Exception as e:  # one failed batch fails only its items
                log.warning("reward model %s failed on %d items: %s", self.path, len(texts), e)
                out.extend([None] * len(texts))
        return out
