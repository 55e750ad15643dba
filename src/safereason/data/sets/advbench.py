"""AdvBench harmful behaviours (Zou et al., "Universal and Transferable Adversarial Attacks on Aligned Language
Models", 2023): 520 goals, label harmful; ids are ``advbench-<row>``, each goal's affirmative ``target`` in meta."""

from __future__ import annotations

from safereason.data.fetch import _GH
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _meta, _require, _text
from safereason.records import Prompt

COMMIT = "098262edf85f807224e70ecd87b9d83716bf6b73"  # llm-attacks/llm-attacks
SHA256 = "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1"  # data/advbench/harmful_behaviors.csv


def parse(t: Table) -> list[Prompt]:
    _require(t, "goal")
    return _check([
        Prompt(id=f"advbench-{i + 1:04d}", prompt=_text(t, i, "goal"), label="harmful", meta=_meta(r, "goal"))
        for i, r in enumerate(t.rows)
    ], t)


SPEC = BenchmarkSpec("advbench", "AdvBench harmful behaviours: 520", "advbench/harmful_behaviors.csv",
                     f"{_GH}/llm-attacks/llm-attacks/{COMMIT}/data/advbench/harmful_behaviors.csv", parse,
                     sha256=SHA256)
