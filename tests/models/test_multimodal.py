"""The transformers backend with a vision-language model: a tiny random LLaVA built in-process and saved to disk,
so it loads through the normal path (config with a vision part -> AutoProcessor + AutoModelForImageTextToText)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from safereason.errors import ConfigError, DataError
from safereason.models import SamplingParams

#: a ChatML template that renders list content, one <image> per image item (as SmolVLM's does)
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_SIZE, PATCH = 16, 8
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2  # the CLS position is dropped ("default" feature strategy)
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8)
SAMPLED = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three small distinct images (a figure-like PNG, a gradient, a palette JPEG) plus a corrupt file."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    a = Image.new("RGB", (40, 30), "white")
    for x in range(5, 35):
        a.putpixel((x, 12), (0, 0, 0))
    a.save(d / "a.png")
    Image.linear_gradient("L").resize((24, 24)).save(d / "b.png")  # grayscale: loaded as RGB
    Image.new("P", (20, 20), 3).convert("RGB").save(d / "c.jpg")
    (d / "broken.png").write_bytes(b"not an image")
    return {k: str(d / f) for k, f in {"a": "a.png", "b": "b.png", "c": "c.jpg", "broken": "broken.png"}.items()}


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """LLaVA: a 1-layer CLIP vision tower on 16x16 images (4 image tokens) + a 2-layer random Llama, with the real
    SmolLM2 tokenizer plus an added <image> token, and a LlavaProcessor."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers import CLIPImageProcessorPil as ImageProcessor  # no torchvision needed

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=16)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=TOKENS_PER_IMAGE, vision_feature_layer=-1,
                      vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg)
    processor = LlavaProcessor(
        image_processor=ImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=TEMPLATE,
    )
    out = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vlm(tiny_vlm_dir: Path) -> Any:
    from safereason.models.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_vlm_dir), device="cpu", dtype="float32")


def _image_id(vlm: Any) -> int:
    return vlm.vision.placeholder_id


def test_loads_as_vision_language_model(vlm: Any) -> None:
    assert type(vlm.model).__name__ == "LlavaForConditionalGeneration"
    assert vlm.vision.image_token == "<image>"
    ident = vlm.identity()
    assert ident["image_processor_hash"].startswith("sha256:")
    assert ident["chat_template_hash"].startswith("sha256:")


def test_render_with_images_writes_one_placeholder_per_image(vlm: Any, images: dict[str, str]) -> None:
    text = vlm.render_prompt("What is shown?", system_prompt="Be brief.", prefill="<think>\n",
                             images=[images["a"], images["b"]])
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image><image>What is shown?"
                    "<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert vlm.encode(text).count(_image_id(vlm)) == 2  # encode keeps one placeholder id per image
    plain = vlm.render_prompt("What is shown?")
    assert "<image>" not in plain and "What is shown?" in plain


def test_inputs_expand_each_placeholder_and_left_pad(vlm: Any, images: dict[str, str]) -> None:
    rows = [vlm.encode(vlm.render_prompt("one", images=[images["a"]])),
            vlm.encode(vlm.render_prompt("a text-only prompt that is longer")),
            vlm.encode(vlm.render_prompt("two", images=[images["a"], images["c"]]))]
    inputs = vlm.prepare_inputs(rows, [[images["a"]], [], [images["a"], images["c"]]])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert [int((r == _image_id(vlm)).sum()) for r in ids] == [TOKENS_PER_IMAGE, 0, 2 * TOKENS_PER_IMAGE]
    assert tuple(inputs["pixel_values"].shape) == (3, 3, IMAGE_SIZE, IMAGE_SIZE)  # images in token order
    lengths = [len(r) + (TOKENS_PER_IMAGE - 1) * r.count(_image_id(vlm)) for r in rows]
    assert mask.sum(dim=1).tolist() == lengths and ids.shape[1] == max(lengths)
    assert all(mask[i, : ids.shape[1] - n].sum() == 0 for i, n in enumerate(lengths))  # padding on the left


def test_sampled_generation_with_images_is_seeded(vlm: Any, images: dict[str, str]) -> None:
    text = vlm.render_prompt("Describe", images=[images["a"]])
    a = vlm.generate([text, text], SAMPLED, seed=7, images=[[images["a"]], [images["a"]]])
    b = vlm.generate([text, text], SAMPLED, seed=7, images=[[images["a"]], [images["a"]]])
    c = vlm.generate([text, text], SAMPLED, seed=8, images=[[images["a"]], [images["a"]]])
    assert a == b and a != c
    assert all(0 < x.n_tokens <= 8 for x in a)


def test_different_images_change_the_logits(vlm: Any, images: dict[str, str]) -> None:
    import torch

    ids = [vlm.encode(vlm.render_prompt("Describe", images=[images["a"]]))]
    with torch.inference_mode():
        la, lb = (vlm.model(**vlm.prepare_inputs(ids, [[images[k]]])).logits[0, -1] for k in ("a", "b"))
        la2 = vlm.model(**vlm.prepare_inputs(ids, [[images["a"]]])).logits[0, -1]
    assert torch.equal(la, la2)
    assert (la - lb).abs().max() > 1e-4


def test_mixed_batch_matches_rows_alone(vlm: Any, images: dict[str, str]) -> None:
    rows = [("one image", [images["a"]]), ("no image at all here", []), ("two images", [images["b"], images["c"]])]
    texts = [vlm.render_prompt(p, images=imgs) for p, imgs in rows]
    batched = vlm.generate(texts, GREEDY, seed=0, images=[imgs for _, imgs in rows])
    alone = [vlm.generate([t], GREEDY, seed=0, **({"images": [imgs]} if imgs else {}))[0]
             for t, (_, imgs) in zip(texts, rows, strict=True)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert all(c.n_tokens == 8 for c in batched)


def test_continuation_from_encoded_prompt_is_exact(vlm: Any, images: dict[str, str]) -> None:
    """The rule MoreThink / SafeThink rely on: encode(prompt_text) + generated ids, with the same images."""
    text = vlm.render_prompt("Describe", images=[images["a"]])
    (full,) = vlm.generate([text], GREEDY, seed=0, images=[[images["a"]]])
    head = list(full.token_ids[:3])
    (rest,) = vlm.generate_ids([vlm.encode(text) + head], SamplingParams(temperature=0.0, max_new_tokens=5), seed=0,
                               images=[[images["a"]]])
    assert head + list(rest.token_ids) == list(full.token_ids)
    assert _image_id(vlm) not in full.token_ids


def test_more_think_with_images(vlm: Any, images: dict[str, str]) -> None:
    from safereason.reasoning import get_format
    from safereason.reasoning.controls import more_think

    texts = [vlm.render_prompt("Describe", images=[images["a"]], prefill="<think>\n"),
             vlm.render_prompt("text only", prefill="<think>\n")]
    out = more_think(vlm, texts, SamplingParams(temperature=1.0, max_new_tokens=10), 3, fmt=get_format("r1"),
                     keys=["a:0", "b:0"], rounds=1, budget=6, images=[[images["a"]], []])
    assert len(out) == 2 and all(r.thinking_tokens <= 6 for r in out)


def test_in_memory_processor_injection(vlm: Any, images: dict[str, str]) -> None:
    from safereason.models.transformers_backend import TransformersBackend

    again = TransformersBackend("in-memory-llava", device="cpu", model_obj=vlm.model, processor=vlm.processor)
    text = again.render_prompt("Describe", images=[images["a"]])
    assert again.generate([text], GREEDY, 0, images=[[images["a"]]]) == vlm.generate([text], GREEDY, 0,
                                                                                       images=[[images["a"]]])


def test_per_token_type_ids_follow_the_expansion(vlm: Any, images: dict[str, str]) -> None:
    """Processors that return mm_token_type_ids (Qwen2-VL's M-RoPE needs them) get them built per row."""
    from safereason.models.vision import VisionInputs

    class WithTypeIds:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def __call__(self, *args: Any, **kw: Any) -> Any:
            return self.inner(*args, return_mm_token_type_ids=True, **kw)

    vision = VisionInputs(WithTypeIds(vlm.processor), vlm.tokenizer, "wrapped")
    rows = [vlm.encode(vlm.render_prompt("x", images=[images["a"]])), vlm.encode(vlm.render_prompt("longer text"))]
    out = vision.build(rows, [[images["a"]], []], pad_id=vlm.tokenizer.pad_token_id, device="cpu",
                       dtype=vlm.model.dtype)
    types = out["mm_token_type_ids"]
    assert types.shape == out["input_ids"].shape
    assert ((out["input_ids"] == _image_id(vlm)) == (types == 1)).all()


def test_text_only_model_rejects_images(tiny_backend: Any, images: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="takes no images; use a vision-language model or a text-only benchmark"):
        tiny_backend.render_prompt("x", images=[images["a"]])
    text = tiny_backend.render_prompt("x")
    with pytest.raises(ConfigError, match="takes no images"):
        tiny_backend.generate([text], GREEDY, 0, images=[[images["a"]]])
    with pytest.raises(ConfigError, match="takes no images"):
        tiny_backend.generate_ids([tiny_backend.encode(text)], GREEDY, 0, images=[[images["a"]]])
    assert len(tiny_backend.generate([text], GREEDY, 0, images=[[]])) == 1  # no images: the text path


def test_missing_or_unreadable_image_is_a_data_error(vlm: Any, images: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.png")
    with pytest.raises(DataError, match=f"image file not found: {missing}"):
        vlm.render_prompt("x", images=[missing])
    text = vlm.render_prompt("x", images=[images["a"]])
    with pytest.raises(DataError, match=f"image file not found: {missing}"):
        vlm.generate([text], GREEDY, 0, images=[[missing]])
    with pytest.raises(DataError, match="cannot read image file .*broken.png"):
        vlm.generate([text], GREEDY, 0, images=[[images["broken"]]])


def test_placeholders_must_match_images(vlm: Any, images: dict[str, str]) -> None:
    ids = vlm.encode(vlm.render_prompt("x", images=[images["a"]]))
    with pytest.raises(DataError, match="1 image placeholder"):
        vlm.generate_ids([ids], GREEDY, 0, images=[[images["a"], images["b"]]])
    with pytest.raises(DataError, match="contains the image placeholder"):
        vlm.render_prompt("look: <image>")


def test_evaluate_figstep_end_to_end(vlm: Any, tiny_vlm_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    from safereason import evaluate

    cfg = dict(model=str(tiny_vlm_dir), benchmark="figstep", data_dir=str(shared_data), limit=2, k=1,
               max_new_tokens=8, temperature=1.0, seed=1, n_bootstrap=20, out=str(tmp_path / "run"))
    res = evaluate(cfg, backend=vlm, progress=False)
    assert len(res.samples) == 2
    for s in res.samples:
        assert len(s.images) == 1 and Path(s.images[0]).is_file()
        assert s.prompt_text.count("<image>") == 1 and "The image shows a list numbered 1, 2, and 3" in s.prompt_text
        assert s.label == "harmful" and s.n_response_tokens > 0
    again = evaluate(cfg, backend=vlm, progress=False)  # resumes: nothing to generate, same records
    assert [s.response for s in again.samples] == [s.response for s in res.samples]


def test_safethink_with_images(vlm: Any, images: dict[str, str], hash_judge: Any) -> None:
    """SafeThink on a vision-language model: the default mode there (chunked) passes each row's images to
    every continuation and steers as the step-by-step reference does (greedy, a scorer that steers)."""
    from safereason.defenses import build_defense
    from safereason.reasoning import get_format

    texts = [vlm.render_prompt("Describe", images=[images["a"]], prefill="<think>\n"),
             vlm.render_prompt("Describe", images=[images["b"]], prefill="<think>\n"),
             vlm.render_prompt("text only", prefill="<think>\n")]
    imgs = [[images["a"]], [images["b"]], []]
    params = SamplingParams(temperature=0.0, max_new_tokens=24)
    scorer = hash_judge(2)
    outs = {}
    for mode in ("auto", "stepwise"):
        d = build_defense("safethink", {"scorer": scorer, "max_step_tokens": 4, "attempts": 2, "mode": mode})
        assert d.resolve_mode(vlm, imgs) == ("chunked" if mode == "auto" else mode)
        outs[mode] = d.generate(vlm, texts, ["x"] * 3, params, 2, fmt=get_format("r1"), keys=["a", "b", "c"],
                                images=imgs)
    for a, b in zip(outs["auto"], outs["stepwise"], strict=True):
        assert a.completion.token_ids == b.completion.token_ids
        assert [(iv["step"], iv["attempts"]) for iv in a.control["interventions"]] == [
            (iv["step"], iv["attempts"]) for iv in b.control["interventions"]]
    assert any(o.control["interventions"] for o in outs["auto"])
    # the images matter: the two image rows were given the same text
    assert outs["auto"][0].completion.token_ids != outs["auto"][1].completion.token_ids
