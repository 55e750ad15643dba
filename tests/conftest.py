"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random model built from it in-process."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Python installs its Ctrl-C handler only when SIGINT is not ignored at start, and a shell's background job
# (`nohup pytest &`) starts with it ignored: the interrupt tests need it here and, no longer ignored, in the CLI
# processes they start
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public benchmark files not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded model converted to safetensors (once per user cache, ~30 s the first time)."""
    from safereason.models.resolve import resolve_model

    return Path(resolve_model("smollm2-135m").path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer random Llama with the real SmolLM2 tokenizer and chat template, saved to disk."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path):
    from safereason.models.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture()
def cli_env(tmp_path: Path) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["SAFEREASON_DATA"] = str(SHARED_DATA)
    return env


PYTHON = sys.executable


class HashScorer:
    """A deterministic, text-only safety scorer that fails about one step in ``modulus``: two SafeThink runs
    agree exactly when they produce the same traces, and it steers often enough to compare interventions."""

    outputs = ("unsafe",)

    def __init__(self, modulus: int = 3) -> None:
        self.modulus = modulus

    def identity(self) -> dict:
        return {"name": "hash", "modulus": self.modulus}

    def judge(self, items: list) -> list:
        import hashlib

        from safereason.records import Verdict

        return [Verdict(unsafe=(u := hashlib.sha256(i.text.encode()).digest()[0] % self.modulus == 0),
                        score=float(u)) for i in items]


@pytest.fixture()
def hash_judge():
    """Registers HashScorer under a judge name for the test: ``name = hash_judge(modulus)``."""
    from safereason.judges import JUDGES

    names: list[str] = []

    def register(modulus: int = 3) -> str:
        name = f"hash-{modulus}"
        JUDGES.add(name, lambda: HashScorer(modulus))
        names.append(name)
        return name

    yield register
    for name in names:
        JUDGES._items.pop(name, None)


class WordBackend:
    """A backend without weights: a token is a whitespace word; ``blocked`` prompts get finish_reason blocked."""

    name = "word"

    def __init__(self, context: int | None = 64, blocked: tuple[str, ...] = ()) -> None:
        self.context, self.blocked, self.generated = context, blocked, []

    def context_limit(self) -> int | None:
        return self.context

    def render_prompt(self, prompt, *, system_prompt=None, prefill="", template_kwargs=None):
        system = f"[system] {system_prompt}\n" if system_prompt else ""
        return f"{system}[user] {prompt}\n[assistant] " + prefill

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def generate(self, prompt_texts, params, seed, images=None):
        from safereason.models.base import Completion

        self.generated += list(prompt_texts)
        out = []
        for t in prompt_texts:
            if any(b in t for b in self.blocked):
                out.append(Completion(text="Your request was flagged by our content policy.", n_tokens=0,
                                      finish_reason="blocked"))
            else:
                out.append(Completion(text="Sure, here it is.", n_tokens=4, finish_reason="stop"))
        return out

    def identity(self):
        return {"backend": self.name, "model_hash": "word", "tokenizer_hash": "word", "chat_template_hash": "word"}


@pytest.fixture()
def word_backend() -> type[WordBackend]:
    """The :class:`WordBackend` class (tests build it with their own context size and blocked words)."""
    return WordBackend
