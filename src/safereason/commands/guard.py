"""``safereason train guard``: fit the offline safety judge ``smol-guard`` (a thin layer over
:mod:`safereason.train.guard`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safereason.errors import ConfigError


def guard_cmd(
    data: Annotated[list[str] | None, typer.Option("--data", help="harm-labelled training set: harmbench-val (the "
                                                   "default) or a local file with prompt/text/label columns "
                                                   "(repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="run dir: features, guard.safetensors, guard.json, CARD.md, "
                                                  "agreement.md; re-running resumes")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (keys as the flags); flags override it")] = None,
    seed: Annotated[int | None, typer.Option(help="seeds the cross-validation folds (default 0)")] = None,
    layers: Annotated[str | None, typer.Option(help="SmolLM2 layers read, comma-separated (default 5)")] = None,
    max_response_tokens: Annotated[int | None, typer.Option(
        help="response tokens read (default: the first 256; HarmBench's classifier reads 512)")] = None,
    test: Annotated[list[str] | None, typer.Option("--test", help="held-out labelled set to report agreement on "
                                                   "(default jbb-judge-comparison; 'none' for none)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="folder holding the public benchmark files")] = None,
    batch_size: Annotated[int | None, typer.Option(help="pairs per forward pass (default 16)")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Train smol-guard on human-labelled data; JailbreakBench's judge-comparison set stays held out."""
    from pydantic import ValidationError

    from safereason.commands.common import _quiet_libraries
    from safereason.config import format_validation_error, read_yaml_mapping
    from safereason.train.guard import GuardConfig, train_guard

    values: dict[str, Any] = dict(read_yaml_mapping(config)) if config else {}
    flags = {"data": data, "out": out, "seed": seed, "max_response_tokens": max_response_tokens,
             "data_dir": data_dir, "batch_size": batch_size,
             "layers": [int(x) for x in layers.split(",") if x.strip()] if layers else None,
             "test": [] if test == ["none"] else test}
    values.update({k: v for k, v in flags.items() if v is not None})
    if values.get("out") is None:
        raise ConfigError("give --out DIR for the guard's run dir")
    try:
        cfg = GuardConfig(**values)
        cfg.spec()
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
    _quiet_libraries()
    meta = train_guard(cfg, progress=not no_progress)
    for name, m in meta["agreement"].items():
        typer.echo(f"{name}: accuracy {m['accuracy']:.3f}, F1 {m['f1']:.3f}, kappa {m['kappa']:.3f} "
                   f"(n = {m['n_scored']})")
    typer.echo(f"guard written to {cfg.out}; use it with --judge smol-guard --judge-opt smol-guard.weights={cfg.out}")
