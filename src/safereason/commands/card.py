"""``safereason card``: a complete safety card for a model or an endpoint (a thin layer over
:mod:`safereason.card`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer()


@app.command("card")
def card_cmd(
    out: Annotated[Path | None, typer.Option(help="card dir: a run dir per stage and card.{html,md,json}; re-running "
                                                  "the same command resumes")] = None,
    model: Annotated[str | None, typer.Option(help="alias (smollm2-135m), local path or hub id; with --endpoint "
                                                   "the served model name")] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (e.g. `safereason serve`)")]
    = None,
    backend_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE backend option (repeatable)")] = None,
    preset: Annotated[str | None, typer.Option(help="quick (default), standard or full")] = None,
    defense: Annotated[str | None, typer.Option(help="run the battery with and without this defense")] = None,
    defense_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE defense option (repeatable)")] = None,
    judge: Annotated[str | None, typer.Option(help="safety judge(s), comma-separated (default smol-guard when "
                                                   "registered, else rs-match)")] = None,
    reference: Annotated[list[Path] | None, typer.Option(help="another card dir, side by side (repeatable)")]
    = None,
    config: Annotated[Path | None, typer.Option(help="card.yaml (keys as the flags); flags override it")] = None,
    from_runs: Annotated[list[Path] | None, typer.Option("--from", help="build the card from finished run dirs "
                                                                        "(repeatable) instead of running it")] = None,
    agreement: Annotated[list[Path] | None, typer.Option(help="with --from: a judge-agreement result JSON of a "
                                                              "card (repeatable)")] = None,
    price_per_mtok: Annotated[float | None, typer.Option(help="money per 1M tokens (prompt + generated)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    data_dir: Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda ...")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Run the whole battery (harmful, reasoning, over-refusal, attacks, utility, defense, judge validity) and
    write one self-contained card: card.html, card.md, card.json."""
    from safereason.commands.common import _judge_options, _quiet_libraries, _split, err_console, out_console
    from safereason.errors import ConfigError

    def echo(line: str) -> None:
        err_console.print(line, highlight=False, soft_wrap=True, markup=False)

    _quiet_libraries()
    if from_runs:
        from safereason.card import card_from_runs

        if out is None:
            raise ConfigError("give --out DIR for the card built from --from run dirs")
        result = card_from_runs(from_runs, out, references=reference or (), agreement=agreement or (),
                                price_per_mtok=price_per_mtok, seed=seed or 0)
    else:
        from safereason.card import card, load_card_config

        values: dict[str, Any] = {
            "out": out, "model": model, "endpoint": endpoint, "preset": preset, "defense": defense,
            "backend_options": (_judge_options(backend_opt, default_judge="backend") or {}).get("backend"),
            "defense_options": (_judge_options(defense_opt, default_judge="defense") or {}).get("defense"),
            "judges": _split(judge), "references": reference, "price_per_mtok": price_per_mtok, "seed": seed,
            "data_dir": data_dir, "device": device,
        }
        if config is None and out is None:
            raise ConfigError("give --out DIR (or --config DIR/card.yaml to resume a card)")
        cfg = load_card_config(config, **values)
        result = card(cfg, progress=not no_progress, echo=echo)
    missing = [m["stage"] for s in result.card["sections"].values() for m in s.get("missing") or []]
    if missing:
        err_console.print(f"{len(missing)} stage(s) missing on the card ({', '.join(missing)}); "
                          f"resume: {result.card.get('resume') or 're-run the same command'}", highlight=False,
                          soft_wrap=True, markup=False)
    out_console.print(f"card: [bold]{result.html}[/bold]  (and card.md, card.json in {result.out})")
