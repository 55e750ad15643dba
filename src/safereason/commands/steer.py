"""``safereason steer-search``: pick SafeThink's steering prefix (a thin layer over defenses/steer_search)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from safereason.commands.common import _judge_options, _quiet_libraries, err_console, out_console, read_template

app = typer.Typer()


@app.command("steer-search")
def steer_search_cmd(
    candidates: Annotated[Path, typer.Option(help="prefixes: text file (one per line, # comments) or YAML/JSON list")],
    model: Annotated[str, typer.Option(help="alias (smollm2-135m), local path or hub id[@revision]")]
    = "smollm2-135m",
    benchmark: Annotated[str, typer.Option(help="harmful prompts: name or file (prompts labelled benign are dropped)")]
    = "smoke",
    benign: Annotated[str, typer.Option(help="benign prompts: name or file (those labelled benign, else all)")]
    = "smoke",
    limit: Annotated[int | None, typer.Option(help="first N harmful prompts")] = None,
    benign_limit: Annotated[int | None, typer.Option(help="first M benign prompts")] = None,
    rollouts: Annotated[int, typer.Option(min=1, help="sampled rollouts per harmful prompt and prefix")] = 4,
    horizon: Annotated[int, typer.Option(min=1, help="tokens per rollout / benign continuation")] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, help="rollout sampling temperature")] = 0.7,
    top_p: Annotated[float, typer.Option()] = 0.95,
    benign_temperature: Annotated[float, typer.Option(min=0.0, help="benign continuations; 0 = greedy")] = 0.0,
    lam: Annotated[float, typer.Option(min=0.0, help="score = safety - lam * KL")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    judge: Annotated[str, typer.Option(help="safety judge of the rollouts (also SafeThink's scorer)")] = "rs-match",
    judge_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE option of --judge (repeatable)")] = None,
    part: Annotated[str, typer.Option(help="judged: thinking (incl. prefix), full, generated (after prefix)")]
    = "thinking",
    reasoning_format: Annotated[str, typer.Option(help="r1, qwen3, skyt1, none")] = "r1",
    system_prompt: Annotated[str | None, typer.Option()] = None,
    think_prefill: Annotated[str, typer.Option(help="opens the thinking block; '' if the template does")]
    = "<think>\n",
    chat_template: Annotated[Path | None, typer.Option(help="Jinja chat template file")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="rows (prompt x rollout) per generate call")] = 16,
    n_bootstrap: Annotated[int, typer.Option(min=0)] = 1000,
    data_dir: Annotated[Path | None, typer.Option(help="local benchmark data dir (env SAFEREASON_DATA)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16")] = "auto",
    out: Annotated[Path | None, typer.Option(help="write steer_search.json, rollouts.jsonl, safethink.yaml here")]
    = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Pick SafeThink's steering prefix: rank candidates by short-horizon safety - lam * KL on benign prompts."""
    from safereason.data import load_benchmark
    from safereason.defenses.steer_search import read_candidates, result_table, split_sets, steer_search, write_outputs
    from safereason.judges import build_judge, close_judge
    from safereason.models import build_backend

    prefixes = read_candidates(candidates)
    template_text = read_template(chat_template)
    opts = (_judge_options(judge_opt, default_judge=judge) or {}).get(judge)
    harmful_set = load_benchmark(benchmark, data_dir=data_dir)
    benign_set = harmful_set if benign == benchmark else load_benchmark(benign, data_dir=data_dir)
    harmful_prompts, benign_prompts = split_sets(harmful_set.prompts, benign_set.prompts, harmful_name=benchmark,
                                                 benign_name=benign, limit=limit, benign_limit=benign_limit)
    _quiet_libraries()
    scorer = build_judge(judge, opts)
    backend = build_backend("transformers", model, device=device, dtype=dtype, chat_template=template_text)
    err_console.print(f"[bold]steer-search[/bold]: {len(prefixes)} prefixes + baseline on {len(harmful_prompts)} "
                      f"harmful x {rollouts} rollouts and {len(benign_prompts)} benign prompts, {horizon} tokens")
    try:
        result = steer_search(backend, harmful_prompts, benign_prompts, prefixes, scorer, rollouts=rollouts,
                              horizon=horizon, lam=lam, temperature=temperature, top_p=top_p,
                              benign_temperature=benign_temperature, seed=seed, system_prompt=system_prompt,
                              think_prefill=think_prefill, fmt=reasoning_format, part=part,  # type: ignore[arg-type]
                              batch_size=batch_size, n_bootstrap=n_bootstrap, progress=not no_progress)
    finally:
        close_judge(scorer)
    result.settings.update(harmful_benchmark={"name": harmful_set.name, "sha256": harmful_set.sha256},
                           benign_benchmark={"name": benign_set.name, "sha256": benign_set.sha256})
    out_console.print(result_table(result, title=f"steer-search: {model}, judge {judge}, lam={lam:g} "
                                   f"(N={len(harmful_prompts)}, R={rollouts}, M={len(benign_prompts)}, H={horizon})"))
    best = result.best
    if best is None:
        out_console.print("no candidate was judged: every verdict was an error")
    elif best.score is not None and result.baseline.score is not None and best.score <= result.baseline.score:
        out_console.print(f"note: no candidate scores above the baseline ({result.baseline.score:.3f})")
    if out is not None:
        written = write_outputs(result, out, opts, model=model, benchmark=benchmark,
                                data_dir=str(data_dir) if data_dir else None, chat_template=template_text,
                                dtype=None if dtype == "auto" else dtype)
        out_console.print(f"wrote: [bold]{', '.join(str(p) for p in written)}[/bold]")
        if best is not None:
            out_console.print(f"run it: safereason eval --config {out / 'safethink.yaml'}")
