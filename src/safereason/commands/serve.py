"""``safereason serve``: the guarded OpenAI-compatible endpoint (a thin layer over :mod:`safereason.serve`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from safereason.commands.common import _judge_options, _quiet_libraries, err_console
from safereason.errors import SafereasonError

app = typer.Typer()


@app.command("serve")
def serve_cmd(
    model: Annotated[str | None, typer.Option(help="alias (smollm2-135m), local path or hub id[@revision]")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML eval config for the model settings; flags override")]
    = None,
    backend: Annotated[str | None, typer.Option(help="transformers (default), vllm, openai")] = None,
    backend_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE backend option (repeatable)")] = None,
    defense: Annotated[str | None, typer.Option(help="safethink (default), zerothink, lessthink, safepath, "
                                                     "adashield, or none (unguarded)")] = None,
    judge: Annotated[str | None, typer.Option(help="SafeThink's safety scorer: a guard model with a continuous "
                                                   "score (llama-guard-3-1b, llama-guard-3-8b, llama-guard-4-12b, "
                                                   "wildguard, harmbench-cls)")]
    = None,
    judge_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE option of the scorer (repeatable)")] = None,
    defense_opt: Annotated[list[str] | None, typer.Option(help="KEY=VALUE defense option (repeatable)")] = None,
    on_unsafe: Annotated[str, typer.Option(help="refuse: an output still scored unsafe after the defense's "
                                                "attempts gets finish_reason content_filter and a refusal; "
                                                "return: return it (the paper's satisficing rule)")] = "refuse",
    allow_binary_scorer: Annotated[bool, typer.Option(help="serve with a scorer that has no continuous score "
                                                           "(rs-match: flags every benign request)")] = False,
    reasoning_format: Annotated[str | None, typer.Option(help="r1, qwen3, skyt1, none")] = None,
    think_prefill: Annotated[str | None,
                             typer.Option(help="text appended after the template, e.g. '<think>\\n'")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="operator system prompt; clients' come after it")] = None,
    temperature: Annotated[float | None, typer.Option(help="default when a request sets none")] = None,
    top_p: Annotated[float | None, typer.Option(help="default when a request sets none")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="default max_tokens of a request")] = None,
    max_tokens_limit: Annotated[int | None, typer.Option(help="largest max_tokens a request may ask for "
                                                              "(default: max(max_new_tokens, 4096))")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16")] = None,
    host: Annotated[str, typer.Option(help="address to bind; anything but loopback needs --api-key-env set")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key_env: Annotated[str, typer.Option(help="environment variable holding the API key clients must send")]
    = "SAFEREASON_API_KEY",
    max_concurrency: Annotated[int, typer.Option(min=1, help="requests running or queued at once; more get 429")]
    = 4,
    served_model_name: Annotated[str | None, typer.Option(help="model id clients use (default: --model)")] = None,
    drain_timeout: Annotated[float, typer.Option(min=0.1, help="on SIGTERM / Ctrl-C, seconds running requests may "
                                                               "take to finish")] = 60.0,
) -> None:
    """Serve an OpenAI-compatible /v1/chat/completions endpoint (FastAPI on uvicorn, streaming included) that
    applies a defense to every request."""
    from safereason.config import load_config_file, make_config
    from safereason.serve import serve

    base = load_config_file(config).model_dump() if config is not None else {}
    name = defense or base.get("defense") or "safethink"  # guarded unless --defense none says otherwise
    name = None if name == "none" else name
    options = (_judge_options(defense_opt, default_judge="defense") or {}).get("defense", {})
    if judge is not None or judge_opt:
        if name != "safethink":
            raise SafereasonError("--judge/--judge-opt set SafeThink's scorer; use them with --defense safethink")
        if judge is not None:
            options["scorer"] = judge
        if judge_opt:
            options["scorer_options"] = (_judge_options(judge_opt, default_judge="scorer") or {})["scorer"]
    if name is None and options:
        raise SafereasonError("--defense-opt given with --defense none")
    if name is not None and name == base.get("defense"):
        options = {**base.get("defense_options", {}), **options}
    values: dict[str, Any] = {
        "model": model, "backend": backend,
        "backend_options": (_judge_options(backend_opt, default_judge="backend") or {}).get("backend"),
        "reasoning_format": reasoning_format, "think_prefill": think_prefill, "system_prompt": system_prompt,
        "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "device": device,
        "dtype": dtype,
    }
    values = {key: v for key, v in values.items() if v is not None}
    cfg = make_config(**{**base, **values, "defense": name, "defense_options": options})
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def ready(server: Any) -> None:
        err_console.print(f"[bold]safereason serve[/bold]: {cfg.model} with defense {cfg.defense or 'NONE'} at "
                          f"{server.url}/v1 (auth: {'bearer key from $' + api_key_env if server.api_key else 'none'}"
                          f", max {max_concurrency} concurrent); Ctrl-C to stop", highlight=False, soft_wrap=True)

    if not serve(cfg, host=host, port=port, api_key_env=api_key_env, max_concurrency=max_concurrency,
                 served_model_name=served_model_name, max_tokens_limit=max_tokens_limit, on_ready=ready,
                 on_unsafe=on_unsafe, allow_binary_scorer=allow_binary_scorer, drain_timeout=drain_timeout):
        sys.stderr.flush()
        os._exit(1)  # a generation thread is still running: do not wait for it, nor let torch tear it down
