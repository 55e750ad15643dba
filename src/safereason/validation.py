"""Checks that run before the first token: a bad setting costs seconds, never a generation.

- **Secrets** in options (``api_key=...``, a URL with ``user:password``) are refused before anything is
  written: config.yaml and the run's state are plain files, so credentials go in environment variables.
- **Prompts** with NUL bytes are refused (tokenizers and servers handle them inconsistently).
- **Chat templates** that drop the user message are refused: every prompt would get the same text.
- **Context length**: prompt tokens + ``max_new_tokens`` must fit the model's context. A prompt is first
  bounded by characters (a token never covers more characters than the longest vocabulary entry), so a
  huge prompt is rejected without being tokenised.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from safereason.errors import ConfigError, DataError

#: option names whose value is a credential (an ``*_env`` option names a variable instead and is fine)
_SECRET_NAME = re.compile(
    r"(?i)^(.*_)?(api_?key|apikey|secret|password|passwd|authorization|bearer|credentials?|"
    r"(access|auth|hf|api|bearer|session)_?token|token|key)$"
)
#: values that are credentials whatever the option is called (OpenAI / HF / Anthropic keys, bearer headers), also
#: a short ``sk-`` key with a digit (``sk-test-SECRET123``); checked on every string, in lists and mappings too
_SECRET_VALUE = re.compile(r"^\s*(sk-[A-Za-z0-9_-]{16,}|sk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{8,}|sk-ant-\S{16,}|"
                           r"hf_[A-Za-z0-9]{20,}|Bearer\s+\S{8,})")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def _secret_problem(path: str, value: Any) -> str | None:
    """Why ``value`` at ``path`` must not be persisted, or None. Never includes the value itself."""
    name = path.rsplit(".", 1)[-1]
    if name.lower().endswith("_env"):
        if value is not None and (not isinstance(value, str) or not _ENV_NAME.fullmatch(value)):
            return f"{path} must be the NAME of an environment variable (letters, digits, _), not its value"
        return None
    if isinstance(value, str) and _URL.match(value):
        try:
            parts = urlsplit(value)
            has_credentials = bool(parts.username or parts.password)
        except ValueError:
            has_credentials = "@" in value.split("/", 3)[2] if value.count("/") >= 2 else False
        if has_credentials:
            return f"{path} is a URL with credentials (user:password@)"
    if _SECRET_NAME.match(name) and value not in (None, "") and not isinstance(value, Mapping | list | tuple):
        return f"{path} is a credential"
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return f"{path} holds what looks like an API key or bearer token"
    return None


def check_secrets(options: Mapping[str, Any]) -> None:
    """Refuse credentials anywhere in ``options`` ({"backend_options": {...}, ...}) before anything is written."""
    for top, value in options.items():
        for path, v in _walk(value, top):
            problem = _secret_problem(path, v)
            if problem is not None:
                raise ConfigError(
                    f"{problem}: secrets are never written to a run dir or config file; put the secret in an "
                    "environment variable and pass its name instead (e.g. api_key_env=MY_API_KEY)"
                )


def check_no_nul(value: Any, what: str) -> None:
    """NUL bytes in prompt text: refused with the place named (tokenizers and servers treat them differently)."""
    for path, v in _walk(value, what):
        if isinstance(v, str) and "\x00" in v:
            raise ConfigError(f"{path} contains a NUL byte (\\x00); remove it")


def check_prompt_texts(prompts: Sequence[Any]) -> None:
    """Benchmark prompts with NUL bytes are refused, naming the first such prompt."""
    for p in prompts:
        if "\x00" in p.prompt:
            raise DataError(f"prompt {p.id!r} contains a NUL byte (\\x00) at character {p.prompt.index(chr(0))}; "
                            "clean the benchmark file")


def check_finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


# -- chat template -------------------------------------------------------------------------------

PROBE = "safereason-probe-7f3c1e9a"


def check_template_keeps_messages(rendered: str, *, sentinel: str, system_prompt: str | None, model: str) -> None:
    """``rendered`` is a probe prompt ``sentinel`` rendered as every prompt will be; refuse a template that
    dropped it (each prompt would get the same text) or the system prompt."""
    if sentinel not in rendered:
        raise ConfigError(
            f"the chat template of {model!r} dropped the user message: a probe prompt does not appear in the "
            "rendered text, so every prompt would get the same text; fix the template (--chat-template FILE)"
        )
    wanted = (system_prompt or "").strip()
    # a remote backend's readable rendering of the request holds the messages as JSON strings
    forms = {wanted, json.dumps(wanted)[1:-1], json.dumps(wanted, ensure_ascii=False)[1:-1]}
    if wanted and not any(f in rendered for f in forms):
        raise ConfigError(
            f"the chat template of {model!r} dropped the system prompt (it does not appear in the rendered "
            "text); fix the template (--chat-template FILE) or leave --system-prompt out"
        )


# -- context length ------------------------------------------------------------------------------

#: a tokenizer's ``model_max_length`` above this is transformers' "no limit" placeholder
_NO_LIMIT = 10**7


def context_limit(backend: Any, backend_options: Mapping[str, Any] | None = None) -> int | None:
    """The model's context in tokens, or None when unknown (a remote server without ``max_model_len``).

    An explicit ``max_model_len`` option wins; else vLLM's engine setting, the model config's
    ``max_position_embeddings`` (the text config of a vision-language model), the tokenizer's
    ``model_max_length``."""
    explicit = (backend_options or {}).get("max_model_len")
    if explicit is not None:
        if not isinstance(explicit, int) or isinstance(explicit, bool) or explicit < 1:
            raise ConfigError(f"backend option max_model_len must be a positive integer, got {explicit!r}")
        return explicit
    own = getattr(backend, "context_limit", None)
    if callable(own):
        own = own()
    if isinstance(own, int) and own > 0:
        return own
    vllm_len = getattr(getattr(backend, "model_config", None), "max_model_len", None)
    if isinstance(vllm_len, int) and vllm_len > 0:
        return vllm_len
    cfg = getattr(getattr(backend, "model", None), "config", None)
    for c in (cfg, getattr(cfg, "text_config", None)):
        n = getattr(c, "max_position_embeddings", None)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    n = getattr(getattr(backend, "tokenizer", None), "model_max_length", None)
    if isinstance(n, int) and 0 < n < _NO_LIMIT:
        return n
    return None


def max_token_chars(backend: Any) -> int | None:
    """The most characters one token can stand for (the longest vocabulary entry), or None when unknown.
    ``len(text) / max_token_chars`` is then a lower bound on the token count that costs no tokenising."""
    tok = getattr(backend, "tokenizer", None)
    try:
        vocab = tok.get_vocab()
    except Exception:  # no tokenizer (remote server), or one without a vocabulary
        return None
    longest = max((len(t) for t in vocab), default=0)
    return longest or None


@dataclass(frozen=True)
class LongPrompt:
    prompt_id: str
    n_tokens: int
    exact: bool  # False: a lower bound from the character count, the prompt was not tokenised

    def reason(self, max_new_tokens: int, limit: int) -> str:
        n = f"{self.n_tokens}" if self.exact else f"at least {self.n_tokens}"
        return (f"prompt {self.prompt_id!r} has {n} tokens; with max_new_tokens {max_new_tokens} that exceeds the "
                f"model's context of {limit} tokens")


def count_within_context(backend: Any, ids: Sequence[str], texts: Sequence[str], *, max_new_tokens: int,
                         limit: int | None) -> tuple[list[int], dict[int, LongPrompt]]:
    """Token counts of ``texts`` and the prompts that do not fit ``limit`` (index -> LongPrompt).

    Texts longer than ``(limit - max_new_tokens) * max_token_chars`` characters cannot fit and are not
    tokenised; their count is that lower bound."""
    counts = [0] * len(texts)
    long: dict[int, LongPrompt] = {}
    room = None if limit is None else limit - max_new_tokens
    per_token = max_token_chars(backend) if room is not None else None
    to_count = list(range(len(texts)))
    if room is not None and per_token is not None:
        to_count = []
        for i, t in enumerate(texts):
            if len(t) > max(room, 0) * per_token:
                counts[i] = -(-len(t) // per_token)
                long[i] = LongPrompt(ids[i], counts[i], exact=False)
            else:
                to_count.append(i)
    for i, n in zip(to_count, backend.count_tokens([texts[i] for i in to_count]), strict=True):
        counts[i] = n
        if room is not None and n > room:
            long[i] = LongPrompt(ids[i], n, exact=True)
    return counts, long


# -- judges --------------------------------------------------------------------------------------

def _check_api_key(obj: Any) -> None:
    """An HTTP judge whose key variable is unset fails now, not at its first request after generation."""
    import os

    client = getattr(obj, "client", None)
    env, required = getattr(client, "api_key_env", None), getattr(client, "key_required", False)
    if isinstance(env, str) and required and not os.environ.get(env, "").strip():
        who = getattr(client, "who", None) or getattr(obj, "name", "judge")
        raise ConfigError(f"{who}: no API key: the environment variable {env} is not set "
                          f"(export {env}=...; keys are read only from the environment)")
    for member in getattr(obj, "members", ()):
        _check_api_key(member)


def preflight_judges(config: Any) -> None:
    """Build (and close) every judge of ``config`` and SafeThink's scorer: bad options and missing API keys fail
    before any generation. Judge constructors only check options; model weights load at the first verdict."""
    from safereason.judges import build_judge, close_judge

    specs = [(name, config.judge_options.get(name)) for name in config.judges]
    if config.defense == "safethink":
        options = config.defense_options
        specs.append((options.get("scorer", "rs-match"), options.get("scorer_options")))
    for name, options in specs:
        judge = build_judge(name, options)
        try:
            _check_api_key(judge)
        finally:
            close_judge(judge)
