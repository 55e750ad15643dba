"""WildJailbreak's evaluation subset as SafeChain uses it (WildJailbreak: Jiang et al., 2024; SafeChain: Jiang
et al., 2025, arXiv:2502.12025): 250 adversarial harmful prompts, read from the hub only."""

from __future__ import annotations

from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _meta, _require, _text
from safereason.records import Prompt

#: No commit sha of UWNSL/WildJailbreakEval could be confirmed offline, so this is a named revision, and
#: the file path assumes the hub's push_to_hub layout for config "250". Replace both with a commit sha and
#: the verified path when online; until then the run manifest's sha256 is what pins the data.
REVISION = "main"
FILE = "250/train-00000-of-00001.parquet"


def parse(t: Table) -> list[Prompt]:
    # SafeChain reads load_dataset("UWNSL/WildJailbreakEval", "250")["train"]["instruction"]
    _require(t, "instruction")
    return _check([
        Prompt(id=f"wildjailbreak-eval-{i + 1:04d}", prompt=_text(t, i, "instruction"), label="harmful",
               meta=_meta(r, "instruction"))
        for i, r in enumerate(t.rows)
    ], t)


SPEC = BenchmarkSpec("wildjailbreak-eval",
                     "WildJailbreak eval subset used by SafeChain: 250 adversarial harmful prompts (hub only)",
                     f"wildjailbreak-eval/{FILE}", f"hf://UWNSL/WildJailbreakEval@{REVISION}/{FILE}", parse)
