"""Training: supervised fine-tuning with TRL (``safereason train sft``)."""

from typing import Any

from safereason.train.config import SFTRunConfig, load_sft_config, make_sft_config
from safereason.train.render import Example, TrainRow, build_examples, read_rows

__all__ = ["Example", "SFTResult", "SFTRunConfig", "TrainRow", "build_examples", "load_sft_config",
           "make_sft_config", "read_rows", "train_sft"]


def __getattr__(name: str) -> Any:
    # lazy, so that `python -m safereason.train.sft` (accelerate launch) does not import the module twice
    if name in ("SFTResult", "train_sft"):
        from safereason.train import sft

        return getattr(sft, name)
    raise AttributeError(name)
