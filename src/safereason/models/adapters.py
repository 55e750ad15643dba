"""Models shipped as a LoRA adapter on an embedded base: merged once into the user cache, then a plain directory.

The merge is plain torch on the safetensors files (``W += B @ A * alpha / r`` for every adapted linear layer), so
loading an adapted alias needs no peft at run time, and the merged directory loads in any backend (transformers,
vLLM). The cache entry is keyed by the adapter's sha256; it is written to a temporary directory and renamed under
a file lock, so a crash or a second process never sees half a model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from safereason.errors import ModelLoadError
from safereason.hashing import sha256_file

if TYPE_CHECKING:
    import torch

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class AdaptedModel:
    """An alias for ``base`` (an embedded alias) with the LoRA adapter in ``adapter_dir`` merged into it."""

    alias: str
    base: str
    adapter_dir: Path
    description: str


ADAPTED: dict[str, AdaptedModel] = {
    "smollm2-135m-think": AdaptedModel(
        alias="smollm2-135m-think", base="smollm2-135m", adapter_dir=ASSETS / "smollm2-135m-think",
        description="smollm2-135m with a LoRA adapter trained by `safereason recipe think`: writes a short "
        "<think> thought, closes it, then answers; its safety is the base model's (mixed), see its CARD.md.",
    ),
}

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


def lora_deltas(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """``{base weight name: B @ A * scale}`` from a peft LoRA adapter directory (float32)."""
    from safetensors.torch import load_file

    try:
        cfg = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read the LoRA adapter in {adapter_dir}: {e}") from None
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora") or cfg.get("rank_pattern") or \
            cfg.get("alpha_pattern"):
        raise ModelLoadError(f"{adapter_dir}: only a plain LoRA adapter (one r and alpha, no DoRA) can be merged")
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scale = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
    pairs: dict[str, dict[str, object]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise ModelLoadError(f"{adapter_dir}: unexpected tensor {key!r} in a LoRA adapter")
        pairs.setdefault(m["module"], {})[m["ab"]] = t
    deltas = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ModelLoadError(f"{adapter_dir}: {module} has lora_{''.join(ab)} only")
        a, b = ab["A"].float(), ab["B"].float()  # type: ignore[attr-defined]
        deltas[f"{module}.weight"] = (b @ a) * scale
    return deltas


def merge_lora(base_dir: Path, adapter_dir: Path, target: Path) -> Path:
    """``target``: the base model directory with the adapter merged (atomic, locked; kept if already there)."""
    from safetensors.torch import load_file, save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        deltas = lora_deltas(adapter_dir)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for f in base_dir.iterdir():
            if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(".lock"):
                shutil.copy2(f, tmp / f.name)
        for shard in sorted(base_dir.glob("*.safetensors")):
            weights = load_file(str(shard))
            for name in deltas.keys() & weights.keys():
                w = weights[name]
                weights[name] = (w.float() + deltas.pop(name)).to(w.dtype)
            save_file(weights, str(tmp / shard.name), metadata={"format": "pt"})
        if deltas:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelLoadError(f"the adapter in {adapter_dir} adapts weights the base {base_dir} does not have: "
                                 f"{', '.join(sorted(deltas)[:3])}")
        (tmp / "SOURCE").write_text(f"{base_dir}\nLoRA {adapter_dir / ADAPTER_WEIGHTS} sha256 "
                                    f"{sha256_file(adapter_dir / ADAPTER_WEIGHTS)}\n")
        os.replace(tmp, target)
    return target


def resolve_adapted(name: str, base_dir: Path, cache: Path) -> Path:
    """The merged directory of the adapted alias ``name`` (merged on first use)."""
    model = ADAPTED[name]
    weights = model.adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(f"model {name!r}: its adapter {weights} is missing from this install; reinstall "
                             "safereason, or rebuild it with `safereason recipe think`")
    target = cache / "models" / f"{name}-{sha256_file(weights)[:16]}"
    return target if (target / "config.json").exists() else merge_lora(base_dir, model.adapter_dir, target)
