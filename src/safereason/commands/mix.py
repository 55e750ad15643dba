"""``safereason data mix``: a λ prompt mix for safety RL (a thin layer over :mod:`safereason.data.mix`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def mix_cmd(
    harmful: Annotated[str, typer.Option(help="harmful prompts: registered set or CSV/JSONL/Parquet file")],
    benign: Annotated[str, typer.Option(help="harmless prompts: registered set or file")],
    out: Annotated[Path, typer.Option(help="output .jsonl or .parquet (columns id, prompt, label, source, "
                                           "category, source_id), with OUT.card.json")],
    ambiguous: Annotated[str | None, typer.Option(help="ambiguous harmless prompts (TARS: OR-Bench; e.g. xstest's "
                                                       "safe prompts)")] = None,
    lam: Annotated[float, typer.Option("--lambda", help="harmful share λ: harmful = round(λ·n)")] = 0.5,
    n: Annotated[int, typer.Option("--n", help="rows in the mix")] = 2000,
    seed: Annotated[int, typer.Option(help="seeds the draws and the order")] = 0,
    ambiguous_share: Annotated[float | None, typer.Option(help="ambiguous share of the non-harmful rows "
                                                                "(default 0.5 with --ambiguous, else 0)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out")] = False,
) -> None:
    """Mix harmful, benign and ambiguous prompts with exact counts (TARS's λ mixes), de-duplicated and seeded."""
    from safereason.commands.common import out_console
    from safereason.data.mix import build_mix, check_out, write_mix

    check_out(out, force)
    mix = build_mix({"harmful": harmful, "benign": benign, "ambiguous": ambiguous}, lam=lam, n=n, seed=seed,
                    ambiguous_share=ambiguous_share, data_dir=data_dir)
    path = write_mix(mix, out, force=force)
    c = mix.counts
    out_console.print(f"mix: [bold]{path}[/bold] ({c.total} rows: {c.harmful} harmful, {c.benign} benign, "
                      f"{c.ambiguous} ambiguous; card: {path.name}.card.json)")
