"""The README's accelerate config is one accelerate itself accepts (the launch itself: test_sft's kill test)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _readme_block(marker: str) -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if b.startswith(marker)]
    assert len(found) == 1, f"no README yaml block starting with {marker!r}"
    return found[0]


def test_readme_fsdp_config_is_accepted_by_accelerate(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    block = _readme_block("# fsdp.yaml")
    assert "-m safereason.train.sft --config sft.yaml" in block.splitlines()[0]
    path = tmp_path / "fsdp.yaml"
    path.write_text(block)
    cfg = load_config_from_file(str(path))  # accelerate launch --config_file reads it so; unknown keys raise
    assert isinstance(cfg, ClusterConfig) and cfg.distributed_type == DistributedType.FSDP
    assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # DIR/model stays a plain model dir
