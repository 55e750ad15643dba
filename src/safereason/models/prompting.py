"""The prompt side every local backend shares: chat-template rendering (text and vision-language models),
encode / decode / token counts. One implementation, so the transformers and vLLM backends give the same
``prompt_text`` and the same ids for the same model, which exact continuations and cross-backend checks rely on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safereason.errors import DataError, ModelLoadError
from safereason.models.vision import VisionInputs, check_image_files, no_images_error, vlm_messages


class ChatPromptMixin:
    """Needs ``tokenizer``, ``model_name``, and for vision-language models ``processor`` and ``vision``."""

    tokenizer: Any
    model_name: str
    processor: Any = None
    vision: VisionInputs | None = None

    def render_prompt(self, prompt: str, *, system_prompt: str | None = None, prefill: str = "",
                      template_kwargs: dict[str, Any] | None = None, images: Sequence[str] = (),
                      history: Sequence[dict[str, str]] = ()) -> str:
        """The chat-templated prompt (the template part of :func:`safereason.rendering.render_prompt`); with
        ``images`` (VLMs only) the user turn is one image item per image, then the text, so the text holds one
        image placeholder per image (see models.vision); ``history``: earlier turns (text-only models)."""
        if self.vision is not None:
            if history:
                raise DataError(f"{self.model_name!r} is a vision-language model: send a single user turn")
            return self._render_vlm(prompt, system_prompt, prefill, template_kwargs, images)
        if images:
            raise no_images_error(self.model_name)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelLoadError(
                f"the tokenizer of {self.model_name!r} has no chat template; pass one with --chat-template FILE"
            )
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            *history, {"role": "user", "content": prompt}
        ]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **(template_kwargs or {})
        )
        return text + prefill

    def _render_vlm(self, prompt: str, system_prompt: str | None, prefill: str,
                    template_kwargs: dict[str, Any] | None, images: Sequence[str]) -> str:
        assert self.vision is not None
        check_image_files(images)
        template = self._chat_template()
        if not template:
            raise ModelLoadError(
                f"the processor of {self.model_name!r} has no chat template; pass one with --chat-template FILE"
            )
        # rendered by the tokenizer with the processor's template: template kwargs (enable_thinking) pass as they
        # do for text-only models, where the processor's own apply_chat_template would filter them
        text = self.tokenizer.apply_chat_template(
            vlm_messages(prompt, system_prompt, len(images)), chat_template=template, tokenize=False,
            add_generation_prompt=True, **(template_kwargs or {}),
        )
        found, token = text.count(self.vision.image_token), self.vision.image_token
        if found < len(images):
            raise ModelLoadError(f"the chat template of {self.model_name!r} wrote {found} image placeholder(s) "
                                 f"{token!r} for {len(images)} image(s): it does not render image items")
        if found > len(images):
            raise DataError(f"the prompt text contains the image placeholder {token!r} of {self.model_name!r} "
                            f"({found} placeholders for {len(images)} image(s)); remove it from the prompt")
        return text + prefill

    def _chat_template(self) -> str | None:
        """The VLM's chat template: the processor's, else the tokenizer's."""
        template = getattr(self.processor, "chat_template", None) or self.tokenizer.chat_template
        if isinstance(template, dict):
            template = template.get("default")
        return template

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def encode(self, text: str) -> list[int]:
        # the chat template already holds any BOS token, so no special tokens are added again
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)
