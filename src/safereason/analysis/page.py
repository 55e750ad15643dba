"""Writing an analysis: ``<kind>.png``, ``<kind>.json`` and ``<kind>.html`` under the output dir.

The HTML page reuses the report's layout and stylesheet (:mod:`safereason.report.page`); this package's own
partials live in ``analysis/templates``. Autoescaping is on: run labels and category names come from files.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined, select_autoescape

from safereason.report.page import Section, data_uri
from safereason.rundir import atomic_write_text

TITLES = {"tradeoff": "Safety–refusal trade-off", "lengths": "Adaptive reasoning: thinking length",
          "representations": "Representation separation"}


@cache
def environment() -> Environment:
    """Analysis partials first, then the report's layout, stylesheet and shared partials."""
    return Environment(
        loader=ChoiceLoader([PackageLoader("safereason.analysis", "templates"),
                             PackageLoader("safereason.report", "templates")]),
        autoescape=select_autoescape(default_for_string=True, default=True),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render(kind: str, result: dict[str, Any], png: bytes, sources: list[str]) -> str:
    figure = [{"caption": TITLES[kind], "src": data_uri(png)}]
    sections = [Section("figure", "Figure", "section_plots.html.j2", figure),
                Section("numbers", "Numbers", f"section_{kind}.html.j2", result)]
    subtitle = "Runs: " + ", ".join(sources)
    return environment().get_template("layout.html.j2").render(title=TITLES[kind], subtitle=subtitle,
                                                              sections=sections)


def write_analysis(kind: str, result: dict[str, Any], png: bytes, out: Path, sources: list[str]) -> dict[str, Path]:
    """Write the three files atomically; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / f"{kind}.png", "json": out / f"{kind}.json", "html": out / f"{kind}.html"}
    tmp = paths["png"].with_name(f".{kind}.png.tmp")
    tmp.write_bytes(png)
    tmp.replace(paths["png"])
    atomic_write_text(paths["json"], json.dumps({"kind": kind, "runs": sources, **result}, indent=2) + "\n")
    atomic_write_text(paths["html"], render(kind, result, png, sources))
    return paths
