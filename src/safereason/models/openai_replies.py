"""Reading an OpenAI-compatible server's replies: what counts as malformed (retried), as blocked by a content
filter, and how the text, token ids and finish reason of a :class:`~safereason.models.base.Completion` are
rebuilt from a chat or completions choice. Mixed into :class:`~safereason.models.openai_backend.OpenAIBackend`.
"""

from __future__ import annotations

import re
from typing import Any

from safereason.judges.http import PostResult, choices_problem
from safereason.models.base import Completion, FinishReason

_POLICY = re.compile(r"content[ _-]?(filter|management|policy)|usage polic|safety system|flagged", re.I)
#: API error codes of a content-policy refusal of the request (OpenAI, Azure OpenAI)
_POLICY_CODES = {"content_policy_violation", "content_filter", "responsibleaipolicyviolation"}
_FAILED_FINISH = {"abort": "aborted by the server (finish_reason=abort)",
                  "error": "the server reported an error (finish_reason=error)"}


class _RowFailure(Exception):
    pass


class _Blocked(_RowFailure):
    """The provider's content filter refused the request (the prompt never got a reply)."""


def reply_problem(data: Any) -> str | None:
    """Why a completion body is malformed (then retried like a 5xx, and an error if it stays so), else None:
    no ``choices``, or a chat message with ``content: null`` and ``finish_reason: stop`` but no reasoning or
    refusal, which would otherwise pass as an empty response."""
    why = choices_problem(data)
    if why is not None:
        return why
    choice = data["choices"][0]
    message = choice.get("message")
    if "message" in choice and not isinstance(message, dict):
        return "malformed reply (choices[0].message is not an object)"
    if isinstance(message, dict) and message.get("content") is None and choice.get("finish_reason") == "stop" \
            and not any(isinstance(message.get(k), str) and message.get(k) for k in
                        ("reasoning", "reasoning_content", "refusal")):
        return "malformed reply (content null with finish_reason stop)"
    return None


class ReplyReader:
    """Turns one :class:`PostResult` into a :class:`Completion`, or raises ``_RowFailure`` / ``_Blocked``. Needs
    the backend's ``tokenizer``, ``encode``/``decode``/``count_tokens``, ``think_markers`` and ``_fmt``."""

    tokenizer: Any
    think_markers: tuple[str, str]
    _fmt: Any
    encode: Any
    decode: Any
    count_tokens: Any

    def _completion(self, res: PostResult, prompt_text: str) -> Completion:
        if not res.ok:
            err = res.error or "request failed"
            if res.status == 400 and ((res.code or "").lower() in _POLICY_CODES or _POLICY.search(err)):
                raise _Blocked("blocked by a content filter: " + err)
            raise _RowFailure(err)
        data = res.data
        if (why := reply_problem(data)) is not None:  # the client retried it; it stayed malformed
            raise _RowFailure(why)
        choice = data["choices"][0]
        reason = choice.get("finish_reason")
        if reason in _FAILED_FINISH:
            raise _RowFailure(_FAILED_FINISH[reason])
        text = self._chat_text(choice, prompt_text) if "message" in choice else choice.get("text")
        if reason == "content_filter":
            if not isinstance(text, str) or not text.strip():
                raise _Blocked("blocked by a content filter (finish_reason=content_filter, no text)")
            raise _RowFailure("an output content filter cut the reply (finish_reason=content_filter after "
                              f"{len(text)} characters): neither the model's reply nor a blocked prompt")
        if not isinstance(text, str):
            raise _RowFailure("malformed reply (no text in choices[0])")
        finish: FinishReason = "length" if reason == "length" else "stop"
        stop_reason = choice.get("stop_reason")  # vLLM: the stop string, a stop token id, or null (EOS)
        stopped_by = None if finish == "length" else (stop_reason if isinstance(stop_reason, str) and stop_reason
                                                      else "eos")
        server_ids = choice.get("token_ids")
        ids: list[int] | None = None
        if self.tokenizer is not None and isinstance(server_ids, list) and all(type(t) is int for t in server_ids):
            ids = self._ids_for_text(server_ids, text)
        usage = data.get("usage") if isinstance(data, dict) else None
        used = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if ids is not None:
            n = len(ids)
        elif isinstance(used, int) and not isinstance(used, bool):
            n = used
        else:
            n = self.count_tokens([text])[0]
        if ids is None and self.tokenizer is not None:
            ids = self.encode(text)
        return Completion(text=text, n_tokens=n, finish_reason=finish, token_ids=tuple(ids or ()),
                          stopped_by=stopped_by)

    def _chat_text(self, choice: dict[str, Any], prompt_text: str) -> str | None:
        message = choice.get("message")
        if not isinstance(message, dict):
            return None
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content is None and isinstance(message.get("refusal"), str):
            content = message["refusal"]  # OpenAI's own refusal field: the model's words, not a filter
        if content is not None and not isinstance(content, str):
            return None
        reasoning = next((r for key in ("reasoning", "reasoning_content")
                          if isinstance(r := message.get(key), str) and r), None)
        if reasoning is None:
            return content or ""
        start, end = self.think_markers
        text = reasoning.strip()
        if content is not None:  # the server saw the end marker
            text += f"\n{end}\n\n{content.lstrip()}"
        if self._fmt.opened_in_prompt(prompt_text) or self._fmt.closed_in_prompt(prompt_text):
            # opened: the response goes on inside the block; closed (ZeroThink): the "reasoning" is answer text
            return text
        return f"{start}\n{text}"

    def _ids_for_text(self, ids: list[int], text: str) -> list[int] | None:
        """The server's ids cut to ``text`` (vLLM keeps EOS and stop-string tokens), or None if they don't match."""
        if self.decode(ids) == text:
            return ids
        lo, hi = 0, len(ids)  # largest m with len(decode(ids[:m])) <= len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(self.decode(ids[:mid])) <= len(text):
                lo = mid
            else:
                hi = mid - 1
        head = self.decode(ids[:lo])
        if head == text:
            return ids[:lo]
        # a token straddling the cut (like the transformers backend, the ids stop before it)
        if text.startswith(head) and lo < len(ids) and self.decode(ids[:lo + 1]).startswith(text):
            return ids[:lo]
        return None
