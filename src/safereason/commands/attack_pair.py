"""``safereason attack pair``: PAIR over a benchmark (a thin layer over :mod:`safereason.attacks.pair_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from safereason.attacks.base import AttackResult
from safereason.commands.attack import attack_app
from safereason.commands.common import _judge_options, _quiet_libraries, out_console


@attack_app.command("pair")
def pair_cmd(
    target_model: Annotated[str, typer.Option(help="the attacked model: alias, local path, hub id, served name")],
    attacker_model: Annotated[str, typer.Option(help="the model that writes the jailbreak prompts")],
    benchmark: Annotated[str, typer.Option(help="registered name or a CSV/JSONL/Parquet path")],
    out: Annotated[Path, typer.Option(help="writes OUT/adversarial.jsonl; re-running the same command resumes")],
    judge: Annotated[str, typer.Option(help="pair-gcg (PAIR's default: refusal keywords and length), pair-rubric "
                                            "(PAIR's 1-10 judge prompt) or any safety judge")] = "pair-gcg",
    limit: Annotated[int | None, typer.Option(min=1, help="first N behaviours")] = None,
    streams: Annotated[int, typer.Option(min=1, help="parallel conversations N (official default 3)")] = 3,
    depth: Annotated[int, typer.Option(min=1, help="rounds D per conversation (official default 3)")] = 3,
    keep_last_n: Annotated[int, typer.Option(min=1, help="attacker turns kept in its history")] = 4,
    max_attack_attempts: Annotated[int, typer.Option(min=1, help="tries for a valid JSON attacker reply")] = 5,
    attack_max_tokens: Annotated[int, typer.Option(min=1)] = 500,
    target_max_tokens: Annotated[int, typer.Option(min=1, help="raise it for reasoning models")] = 150,
    attacker_prefill: Annotated[bool, typer.Option(
        "--attacker-prefill/--no-attacker-prefill",
        help="seed the attacker's reply with the start of its JSON (off for chat APIs without prefill)")] = True,
    backend: Annotated[str, typer.Option(help="the target's backend: transformers, vllm, openai")] = "transformers",
    backend_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE target backend option")] = None,
    attacker_backend: Annotated[str | None, typer.Option(help="default: the target's backend")] = None,
    attacker_backend_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE attacker backend option")] = None,
    judge_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE judge option (repeatable)")] = None,
    target_from: Annotated[str, typer.Option(help="auto, column (the row's target), harmbench")] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option()] = "auto",
    dtype: Annotated[str, typer.Option()] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")] = None,
) -> None:
    """PAIR (Chao et al. 2023): an attacker model refines jailbreak prompts from the target's replies and a judge's
    1-10 score, N streams x D rounds per behaviour; every query, response and score is recorded."""
    from safereason.attacks.pair import PAIRConfig
    from safereason.attacks.pair_run import PairRun, attack_pair

    def opts(pairs: list[str] | None, name: str) -> dict[str, object]:
        return (_judge_options(pairs, default_judge=name) or {}).get(name, {})

    cfg = PAIRConfig(n_streams=streams, n_iterations=depth, keep_last_n=keep_last_n,
                     max_attack_attempts=max_attack_attempts, attack_max_new_tokens=attack_max_tokens,
                     target_max_new_tokens=target_max_tokens, attacker_prefill=attacker_prefill, seed=seed)
    run = PairRun(target_model=target_model, attacker_model=attacker_model, judge=judge, benchmark=benchmark,
                  out=out, limit=limit, cfg=cfg, target_backend=backend, attacker_backend=attacker_backend,
                  target_options=opts(backend_opt, "backend"), attacker_options=opts(attacker_backend_opt, "backend"),
                  judge_options=opts(judge_opt, judge), target_from=target_from, device=device, dtype=dtype,
                  data_dir=str(data_dir) if data_dir is not None else None)
    _quiet_libraries()

    def progress(r: AttackResult, n: int, total: int) -> None:
        unparsed = r.extra.get("judge_unparsed", 0)
        out_console.print(f"[{n}/{total}] {r.id}: best score {r.score:g} after {r.queries} queries"
                          f"{' (jailbroken)' if r.success else ''}"
                          f"{f'; {unparsed} judge replies without [[N]] read as 1' if unparsed else ''}",
                          highlight=False)

    results = attack_pair(run, progress=progress)
    wins = sum(bool(r.success) for r in results)
    unparsed = sum(int(r.extra.get("judge_unparsed") or 0) for r in results)
    errors = sum(int(r.extra.get("judge_errors") or 0) for r in results)
    out_console.print(f"PAIR: {wins}/{len(results)} behaviours reached score 10 (the attack's own judge); judge "
                      f"replies read as 1 (no [[N]]): {unparsed}, judge errors: {errors}; "
                      f"adversarial file: [bold]{out / 'adversarial.jsonl'}[/bold]")
