"""How the ``openai`` backend renders prompts: the local tokenizer's chat template when it has one, else a
readable rendering of the chat request (the server applies its own template); each rendering remembers its
request so that text the runner appends (thinking controls, prefill) is sent as more assistant prefill."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safereason.errors import ConfigError, ModelLoadError

WHO = "openai backend"
_WHO = WHO
_HEADER = "[chat request: the server applies its own chat template]"
_ASSISTANT = "[assistant]"


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    template_kwargs: dict[str, Any]
    prefill: str


def load_tokenizer(name: str) -> Any:
    """A tokenizer from a tokenizer-only dir, or whatever ``resolve_model`` accepts (alias, model dir, hub id)."""
    from transformers import AutoTokenizer

    from safereason.models.resolve import hub_error, hub_reachable, resolve_model

    path = Path(name).expanduser()
    if path.is_dir() and ((path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists()):
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{_WHO}: could not load tokenizer from {path}: {e}") from e
    resolved = resolve_model(name)
    kw: dict[str, Any] = {"revision": resolved.revision} if resolved.revision else {}
    try:
        if resolved.is_local:
            return AutoTokenizer.from_pretrained(resolved.path)
        try:
            return AutoTokenizer.from_pretrained(resolved.path, local_files_only=True, **kw)
        except OSError as e:
            if not hub_reachable():
                raise hub_error(resolved.name, e) from e
        return AutoTokenizer.from_pretrained(resolved.path, **kw)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{_WHO}: could not load tokenizer {name!r}: {e}") from e


class ChatPrompts:
    """The prompt side of :class:`~safereason.models.openai_backend.OpenAIBackend` (a mixin: it reads the
    backend's ``mode``, ``tokenizer``, ``tokenizer_name``, ``default_template_kwargs``, ``allow_prefill`` and
    ``_chat_requests``)."""

    mode: str
    tokenizer: Any
    tokenizer_name: str | None
    default_template_kwargs: dict[str, Any]
    allow_prefill: bool
    _chat_requests: dict[str, ChatRequest]

    def render_prompt(self, prompt: str, *, system_prompt: str | None = None, prefill: str = "",
                      template_kwargs: dict[str, Any] | None = None) -> str:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}
        ]
        return self.render_messages(messages, prefill=prefill, template_kwargs=template_kwargs)

    def render_messages(self, messages: Sequence[dict[str, str]], *, prefill: str = "",
                        template_kwargs: dict[str, Any] | None = None) -> str:
        """A whole conversation (PAIR's attacker history) rendered and registered as :meth:`render_prompt`
        renders one turn, so that ``generate`` sends it as chat messages."""
        messages = list(messages)
        kwargs = {**self.default_template_kwargs, **(template_kwargs or {})}
        if self.mode == "completions":
            return self._apply_template(messages, kwargs) + prefill
        self._check_prefill(prefill)
        if self.tokenizer is not None:
            text = self._apply_template(messages, kwargs) + prefill
        else:
            request = {"messages": messages, **({"chat_template_kwargs": kwargs} if kwargs else {})}
            text = f"{_HEADER}\n{json.dumps(request, ensure_ascii=False)}\n{_ASSISTANT}\n{prefill}"
        self._chat_requests[text] = ChatRequest(messages, kwargs, prefill)
        return text

    def _apply_template(self, messages: list[dict[str, str]], kwargs: dict[str, Any]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelLoadError(f"{_WHO}: the tokenizer {self.tokenizer_name!r} has no chat template; "
                                 "pass one with --chat-template FILE")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)

    def _check_prefill(self, prefill: str) -> None:
        if prefill and not self.allow_prefill:
            raise ConfigError(
                f"{_WHO}: this run prefills the assistant turn ({prefill[:40]!r}: think_prefill, a thinking "
                "control or prefill), which needs continue_final_message (vLLM/SGLang), but allow_prefill=false; "
                "drop the prefill or use a server that supports it"
            )

    def _chat_request(self, text: str) -> tuple[ChatRequest, str]:
        """The request rendered as ``text`` (or as its longest rendered prefix) and the full prefill."""
        entry = self._chat_requests.get(text)
        if entry is not None:
            return entry, entry.prefill
        key = max((k for k in self._chat_requests if text.startswith(k)), key=len, default=None)
        if key is None:
            raise ConfigError(
                f"{_WHO}: mode=chat generates only from prompts rendered by this backend's render_prompt (the "
                "server applies the chat template); use mode=completions with a tokenizer to send raw prompt text"
            )
        entry = self._chat_requests[key]
        return entry, entry.prefill + text[len(key):]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is None:
            return [len(t.split()) for t in texts]  # approximate; identity()["token_counts"] says so
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def encode(self, text: str) -> list[int]:
        return list(self._need_tokenizer("encode")(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self._need_tokenizer("decode").decode(list(ids), skip_special_tokens=False)

    def _need_tokenizer(self, what: str) -> Any:
        if self.tokenizer is None:
            raise ConfigError(f"{_WHO}: {what} needs a local tokenizer (MoreThink and continuations do): pass "
                              "tokenizer=DIR|ALIAS, and mode=completions to continue token ids")
        return self.tokenizer
