"""Pieces every command shares: the consoles, comma lists, KEY=VALUE options, quiet libraries, template files."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from safereason.errors import SafereasonError

# piped output (CI logs, `| tee`) would otherwise be cut to 80 columns and squash the metrics table
out_console = Console(width=None if sys.stdout.isatty() else 132)
err_console = Console(stderr=True)


def _split(v: str | None) -> list[str] | None:
    return [x.strip() for x in v.split(",") if x.strip()] if v else None


def _judge_options(pairs: list[str] | None, default_judge: str | None = None) -> dict[str, dict[str, Any]] | None:
    """``NAME.KEY=VALUE`` (or ``KEY=VALUE`` for ``default_judge``) -> {NAME: {KEY: VALUE}}; values are YAML."""
    import yaml

    if not pairs:
        return None
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, opt = key.rpartition(".") if default_judge is None else ("", "", key)
        if not sep or not opt or (default_judge is None and not dot):
            form = "KEY=VALUE" if default_judge else "JUDGE.KEY=VALUE"
            raise SafereasonError(f"--judge-opt {pair!r}: expected {form}, e.g. "
                                  f"{'' if default_judge else 'llama-guard-3-1b.'}model=/models/llama-guard-3-1b")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        out.setdefault(name or default_judge or "", {})[opt] = parsed
    return out


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def read_template(path: Path | None) -> str | None:
    """The text of a ``--chat-template`` file (None when not given), or one clear error."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SafereasonError(f"cannot read chat template {path}: {e}") from None


def print_comparison(cmp: Any) -> None:
    """The compare tables: values with CIs, then each model's change against the baseline with its paired CI."""
    from rich.table import Table

    from safereason.compare import table_rows

    headers, values, deltas = table_rows(cmp)
    for title, rows in ((f"safety and utility (part {cmp.part})", values),
                        (f"change against {cmp.baseline} (paired bootstrap CI of the difference)", deltas)):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for h in headers:
            table.add_column(h)
        for r in rows:
            table.add_row(*r)
        out_console.print(table)
