"""Batched generation with Hugging Face transformers (left padding, K samples per prompt).

A model whose config has a vision part (or that is given a ``processor``) is loaded as a vision-language model
(``AutoProcessor`` + ``AutoModelForImageTextToText``) and takes images; see :mod:`safereason.models.vision` for
how image placeholders are expanded and why ``encode(prompt_text)`` stays the base of exact continuations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safereason.errors import ModelLoadError
from safereason.hashing import sha256_dir, sha256_text
from safereason.models.base import Completion, SamplingParams, completion_from_ids, tokenizer_blob
from safereason.models.prompting import ChatPromptMixin
from safereason.models.resolve import ResolvedModel, hub_error, hub_reachable, resolve_model
from safereason.models.session import HFDecodeSession, unsupported_settings
from safereason.models.vision import (
    VisionInputs,
    has_vision,
    no_images_error,
)

log = logging.getLogger(__name__)


def _pick_device(device: str) -> str:
    """``auto`` -> cuda when there is a GPU, else cpu; an asked-for device this torch cannot use is an error
    here, before any weights are read (not a traceback from deep inside ``model.to``)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build, but no GPU is visible"
            raise ModelLoadError(f"device {device!r} asked for, but torch {torch.__version__} is {build}; "
                                 "use --device cpu (or auto)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) are "
                                 "visible")
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("device 'mps' asked for, but this torch has no MPS (Apple GPU) support; use cpu")
    return device


def _pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16") from None


class _StopOnStrings:
    """Stop a row once its *generated* text contains a stop string.

    transformers' own ``stop_strings`` also matches across the end of the prompt (a prompt ending in
    a newline stops on "\\n\\n" after one token); this looks only at what was generated, decoding just
    the tail of each row, so the check stays cheap.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prompt_len = prompt_len
        # a token holds at least one character, so this many tail tokens always cover a stop string
        self.window = max(len(s) for s in self.stops) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        gen = input_ids[:, self.prompt_len:]
        tails = self.tokenizer.batch_decode(gen[:, -self.window:], skip_special_tokens=False)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], device=input_ids.device)


def _load_processor(path: str, **kw: Any) -> Any:
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(path, **kw)
    if not hasattr(proc, "tokenizer") or not hasattr(proc, "image_processor"):
        raise ModelLoadError(f"{path!r} has no image processor and tokenizer: not a vision-language processor")
    return proc


def _image_processor_blob(processor: Any) -> str:
    ip = getattr(processor, "image_processor", None)
    try:
        return ip.to_json_string() if ip is not None else ""
    except (AttributeError, TypeError):
        return repr(ip)


class TransformersBackend(ChatPromptMixin):
    name = "transformers"
    #: ``generate_ids`` takes a ``streamer`` (``safereason serve`` streams from it)
    supports_streamer = True
    #: set for vision-language models; class defaults so that a tokenizer-only instance (the Ray driver's, made
    #: without __init__) is a text-only backend
    processor: Any = None
    vision: VisionInputs | None = None

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto",
                 chat_template: str | None = None, model_obj: Any = None, tokenizer: Any = None,
                 processor: Any = None) -> None:
        """Load ``model`` (alias, path or hub id). ``model_obj``/``tokenizer`` inject in-memory objects
        (tests, notebooks) instead of loading. ``processor`` (an object, or a path / hub id to load it from)
        makes the model a vision-language model even when its config shows no vision part."""
        self.model_name = model
        self.device = _pick_device(device)
        self.resolved: ResolvedModel | None = None
        if model_obj is not None and (tokenizer is not None or processor is not None):
            if isinstance(processor, str | Path):
                processor = _load_processor(str(processor))
            self.model, self.processor = model_obj, processor
            self.tokenizer = tokenizer if tokenizer is not None else processor.tokenizer
        else:
            self.resolved = resolve_model(model)
            self.model, self.tokenizer, self.processor = self._load(self.resolved, _pick_dtype(dtype, self.device),
                                                                    processor)
        self.model.to(self.device)
        self.model.eval()
        if chat_template is not None:
            self.tokenizer.chat_template = chat_template
            if self.processor is not None:
                self.processor.chat_template = chat_template
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos = gen_eos if gen_eos is not None else self.tokenizer.eos_token_id
        self.eos_ids: list[int] = list(eos) if isinstance(eos, list | tuple) else [eos]
        if self.processor is not None:
            self.processor.tokenizer = self.tokenizer  # one tokenizer: the processor pads and expands with it
            self.vision = VisionInputs(self.processor, self.tokenizer, model)

    def _load(self, resolved: ResolvedModel, dtype: Any, processor: Any = None) -> tuple[Any, Any, Any]:
        """(model, tokenizer, processor): a VLM when the config has a vision part or a processor is given,
        else a causal LM with processor None (the text-only path)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        kw: dict[str, Any] = {"revision": resolved.revision} if resolved.revision else {}

        def load(**extra: Any) -> tuple[Any, Any, Any]:
            config = AutoConfig.from_pretrained(resolved.path, **kw, **extra)
            if processor is not None or has_vision(config):
                from transformers import AutoModelForImageTextToText

                if processor is None:
                    proc = _load_processor(resolved.path, **kw, **extra)
                else:
                    proc = _load_processor(str(processor), **extra) if isinstance(processor, str | Path) else processor
                model = AutoModelForImageTextToText.from_pretrained(resolved.path, dtype=dtype, **kw, **extra)
                return model, proc.tokenizer, proc
            tok = AutoTokenizer.from_pretrained(resolved.path, **kw, **extra)
            model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype, **kw, **extra)
            return model, tok, None

        if resolved.is_local:
            try:
                return load()
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"could not load model from {resolved.path}: {e}") from e
        try:
            return load(local_files_only=True)  # already in the HF cache: no network needed
        except OSError as e:
            if not hub_reachable():
                raise hub_error(resolved.name, e) from e
        try:
            return load()
        except OSError as e:
            raise hub_error(resolved.name, e) from e

    # -- prompts ---------------------------------------------------------------------------------
    # render_prompt, count_tokens, encode, decode: ChatPromptMixin (models/prompting.py)

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompt_texts: Sequence[str], params: SamplingParams, seed: int,
                 images: Sequence[Sequence[str]] | None = None) -> list[Completion]:
        # The chat template already holds any BOS token, so no special tokens are added again.
        if not prompt_texts:
            return []
        ids = self.tokenizer(list(prompt_texts), add_special_tokens=False)["input_ids"]
        return self.generate_ids(ids, params, seed, images=images)

    def prepare_inputs(self, prompt_ids: Sequence[Sequence[int]],
                       images: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
        """The model inputs of a VLM batch: image placeholders expanded, left padded, pixel values etc."""
        if self.vision is None:
            if images and any(images):
                raise no_images_error(self.model_name)
            raise ValueError("prepare_inputs is for vision-language models")
        if images is not None and len(images) != len(prompt_ids):
            raise ValueError(f"{len(images)} image lists for {len(prompt_ids)} prompts")
        return self.vision.build(prompt_ids, images, pad_id=self.tokenizer.pad_token_id, device=self.device,
                                 dtype=self.model.dtype)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                     seed: int, images: Sequence[Sequence[str]] | None = None, *,
                     streamer: Any = None) -> list[Completion]:
        """Generate from exact ids; for a VLM ``images[i]`` are row i's images, one per placeholder in its ids.
        ``streamer`` (one row; transformers' ``BaseStreamer``: ``put`` the prompt, then each new id, then ``end``)
        sees the ids as they are sampled, without changing them; raising from ``put`` stops the generation."""
        import torch

        if not prompt_ids:
            return []
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("cannot generate from an empty prompt")
        pad = self.tokenizer.pad_token_id
        inputs: dict[str, Any]
        if self.vision is not None:
            inputs = self.prepare_inputs(prompt_ids, images)
            width = inputs["input_ids"].shape[1]
        else:
            if images and any(images):
                raise no_images_error(self.model_name)
            width = max(len(p) for p in prompt_ids)
            input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompt_ids], device=self.device)
            attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids],
                                     device=self.device)
            inputs = {"input_ids": input_ids, "attention_mask": attention}
        gen_kw: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": pad,
            "eos_token_id": self.eos_ids,
        }
        if params.greedy:
            gen_kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            gen_kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                          top_k=params.top_k or 0)
        if params.ignore_eos:
            gen_kw["min_new_tokens"] = params.max_new_tokens
        if params.stop:
            gen_kw["stopping_criteria"] = [_StopOnStrings(self.tokenizer, params.stop, width)]
        if streamer is not None:
            gen_kw["streamer"] = streamer
        if self.vision is not None:
            gen_kw["suppress_tokens"] = self.vision.suppress_ids  # see models.vision: placeholders stay the prompt's
        torch.manual_seed(seed)
        if self.device.startswith("cuda"):
            torch.cuda.manual_seed_all(seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **gen_kw)
        return [self._completion(row, params) for row in out[:, width:].tolist()]

    @property
    def supports_session(self) -> bool:
        """Whether :meth:`open_session` works here (text-only models; a VLM's image inputs are not carried)."""
        return self.vision is None and not unsupported_settings(self.model.generation_config)

    def open_session(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                     seeds: Sequence[int]) -> HFDecodeSession:
        """A token-by-token decode of these rows on one KV cache, with per-row rewind (SafeThink steering
        without re-reading the prefix); one sampler seed per row."""
        if self.vision is not None:
            raise NotImplementedError("decode sessions are for text-only models")
        if other := unsupported_settings(self.model.generation_config):
            raise NotImplementedError(f"the model's generation config sets {', '.join(other)}, which a decode "
                                      "session does not apply")
        pad = self.tokenizer.pad_token_id
        return HFDecodeSession(self.model, prompt_ids, params, seeds, stop_ids=[*self.eos_ids, pad], pad_id=pad,
                               device=self.device, decode=self.decode)

    def _completion(self, row: list[int], params: SamplingParams) -> Completion:
        stop_ids = set(self.eos_ids) | {self.tokenizer.pad_token_id}
        return completion_from_ids(row, params, stop_ids=stop_ids, decode=self.decode)

    # -- manifest --------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        tok = self.tokenizer
        tok_blob = tokenizer_blob(tok)
        if self.resolved is not None and self.resolved.is_local:
            model_hash = "sha256:" + sha256_dir(self.resolved.path)
        elif self.resolved is not None:
            model_hash = "hub-commit:" + str(getattr(self.model.config, "_commit_hash", None))
        else:
            model_hash = "in-memory:" + sha256_text(
                repr(sorted((k, tuple(v.shape)) for k, v in self.model.state_dict().items()))
            )
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_path": self.resolved.path if self.resolved else None,
            "model_class": type(self.model).__name__,
            "model_hash": model_hash,
            "tokenizer_hash": "sha256:" + sha256_text(tok_blob),
            "chat_template_hash": "sha256:" + sha256_text(
                (self._chat_template() if self.processor is not None else tok.chat_template) or ""),
            "device": self.device,
            "dtype": str(self.model.dtype),
            **({"image_processor_hash": "sha256:" + sha256_text(_image_processor_blob(self.processor))}
               if self.processor is not None else {}),
        }

    # -- scoring ---------------------------------------------------------------------------------
    def token_logprobs(self, prefix_ids: Sequence[Sequence[int]],
                       continuation_ids: Sequence[Sequence[int]]) -> list[Any]:
        """Full-vocabulary log-softmax (numpy float64, shape [len(continuation), vocab]) at each continuation
        position: row t = log p(. | prefix, continuation[:t]). steer-search compares two prefixes with it
        (float64, since a KL between close distributions is a small difference of large log-probs).

        Rows are left-padded with the position ids ``generate`` uses, so a row is scored as it is sampled;
        only the last positions' logits are materialised where the model supports ``logits_to_keep``."""
        import inspect

        import torch

        if len(prefix_ids) != len(continuation_ids):
            raise ValueError("prefix_ids and continuation_ids must have the same length")
        if any(len(p) == 0 for p in prefix_ids):
            raise ValueError("cannot score a continuation of an empty prefix")
        pad = self.tokenizer.pad_token_id
        can_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        out: list[Any] = []
        chunk = 8  # rows per forward pass: bounds the [rows, kept positions, vocab] logits tensor
        for start in range(0, len(prefix_ids), chunk):
            conts = [list(c) for c in continuation_ids[start:start + chunk]]
            rows = [list(p) + c for p, c in zip(prefix_ids[start:start + chunk], conts, strict=True)]
            width = max(len(r) for r in rows)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = max(len(c) for c in conts) + 1
            kw: dict[str, Any] = {"logits_to_keep": keep} if can_keep else {}
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **kw).logits
                logits = logits[:, -keep:, :].double()
                for i, c in enumerate(conts):
                    # position j predicts token j + 1: the len(c) positions before the last predict c
                    lp = torch.log_softmax(logits[i, keep - 1 - len(c): keep - 1], dim=-1)
                    out.append(lp.cpu().numpy())
        return out
