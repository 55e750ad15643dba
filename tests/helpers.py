"""Helpers the tests import (``from tests.helpers import ...``): a weightless backend whose replies a test scripts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class ScriptedBackend(ABC):
    """A backend without weights: a token is a whitespace word, a prompt renders as ``[user] PROMPT\\n[assistant] ``
    plus the prefill, and each rendered prompt gets what :meth:`reply` scripts (text, tokens, finish reason)."""

    name = "scripted"
    #: model, tokenizer and chat-template hash in :meth:`identity`
    hash = "s"

    def context_limit(self) -> int | None:
        return None

    def render_prompt(self, prompt, *, system_prompt=None, prefill="", template_kwargs=None):
        return f"[user] {prompt}\n[assistant] " + prefill

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def generate(self, prompt_texts, params, seed, images=None):
        from safereason.models.base import Completion

        out = []
        for t in prompt_texts:
            text, n_tokens, finish = self.reply(t, params)
            out.append(Completion(text=text, n_tokens=n_tokens, finish_reason=finish))
        return out

    @abstractmethod
    def reply(self, rendered: str, params: Any) -> tuple[str, int, str]:
        """The completion of one rendered prompt: text, its token count and the finish reason (each test's own)."""

    @staticmethod
    def user_prompt(rendered: str) -> str:
        """The user's prompt back out of a rendered prompt."""
        return rendered.split("[user] ", 1)[1].split("\n[assistant]", 1)[0]

    def identity(self):
        h = self.hash
        return {"backend": self.name, "model_hash": h, "tokenizer_hash": h, "chat_template_hash": h}
