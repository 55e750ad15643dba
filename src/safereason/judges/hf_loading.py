"""Loading a classifier judge's checkpoint with transformers, and what it reveals without loading.

Kept apart from :class:`~safereason.judges.hf_classifier.HFLogitJudge` so the judge class reads as the scoring
rule; transformers is imported only inside the functions, so importing the judges stays free of torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def split_model_name(name: str | None) -> tuple[str | None, str | None]:
    """(model, revision) for a judge's identity, without loading or converting anything."""
    if name is None:
        return None, None
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve()), None
    if "@" in name:
        model, _, rev = name.rpartition("@")
        return model, rev
    return name, None


def model_context(model: Any, tok: Any, cap: int) -> int:
    """The model's context length (text config, else the tokenizer's limit, else 4096), at most ``cap``."""
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    n = getattr(cfg, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        n = getattr(tok, "model_max_length", None)
    if not isinstance(n, int) or not 0 < n < 10**7:
        n = 4096
    return min(n, cap)


def load_classifier(path: str, dtype: Any, *, needs_chat_template: bool, **kw: Any) -> tuple[Any, Any]:
    """(model, tokenizer) from ``path`` (a directory or hub id; ``kw`` go to every ``from_pretrained``).

    A chat template missing from the tokenizer is looked up in the processor when ``needs_chat_template``
    (Llama Guard 4 keeps it there), and multimodal checkpoints load with their image-text class.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **kw)
    if needs_chat_template and not getattr(tok, "chat_template", None):
        try:
            from transformers import AutoProcessor

            tok.chat_template = getattr(AutoProcessor.from_pretrained(path, **kw), "chat_template", None)
        except (OSError, ValueError, ImportError):
            pass
    cfg = AutoConfig.from_pretrained(path, **kw)
    archs = getattr(cfg, "architectures", None) or []
    if any(a.endswith("ForConditionalGeneration") for a in archs):
        try:
            from transformers import AutoModelForImageTextToText

            return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, **kw), tok
        except (ValueError, ImportError, KeyError):
            pass
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw), tok
