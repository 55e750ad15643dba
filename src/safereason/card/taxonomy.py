"""One hazard taxonomy for every set: Llama Guard 3's S1-S14, with each set's own categories mapped onto it.

The mapping table ships as ``taxonomy.yaml`` next to this module (package data) and is printed on the card. A
category without a faithful hazard stays *unmapped* (with the reason), so per-hazard numbers never mix in prompts
that do not belong to the hazard.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

UNMAPPED = "unmapped"


@dataclass(frozen=True)
class Taxonomy:
    name: str
    hazards: dict[str, str]  #: code -> name
    notes: dict[str, str]
    sets: dict[str, dict[str, dict[str, Any]]]  #: set -> lower-case category -> {hazard, note}

    def hazard(self, benchmark: str, category: str | None) -> str:
        """The hazard code of ``category`` in ``benchmark``, or ``unmapped``."""
        entry = self.sets.get(benchmark, {}).get((category or "").strip().lower())
        return (entry or {}).get("hazard") or UNMAPPED

    def label(self, code: str) -> str:
        return f"{code} {self.hazards[code]}" if code in self.hazards else "unmapped"

    def table(self, benchmarks: list[str] | None = None) -> list[dict[str, str]]:
        """The mapping as rows (set, category, hazard, note) for the card."""
        rows = []
        for name, cats in self.sets.items():
            if benchmarks is not None and name not in benchmarks:
                continue
            for cat, entry in cats.items():
                code = entry.get("hazard")
                rows.append({"set": name, "category": cat, "hazard": self.label(code) if code else "unmapped",
                             "note": self.notes.get(entry.get("note") or "", "")})
        return rows


@cache
def load_taxonomy() -> Taxonomy:
    data = yaml.safe_load(files("safereason.card").joinpath("taxonomy.yaml").read_text(encoding="utf-8"))
    sets = {name: {str(c).lower(): dict(e) for c, e in cats.items()} for name, cats in data["sets"].items()}
    return Taxonomy(data["taxonomy"], {str(k): str(v) for k, v in data["hazards"].items()}, dict(data["notes"]), sets)
