"""Eval throughput through the ``openai`` backend against a local OpenAI-compatible stand-in server.

The stand-in (FastAPI on uvicorn, loopback) answers every ``/chat/completions`` request after a fixed
``--latency`` and serves at most ``--capacity`` requests at once (the rest queue in the server), so the
latency-bound ideal throughput is ``min(concurrency, capacity) / latency`` requests per second. For each
``max_concurrency`` (the backend option ``concurrency``) one ``safereason.evaluate`` runs ``--rounds`` full
rounds of requests (``concurrency * rounds`` rows, one generate call per ``--rounds-per-batch`` rounds) and the
wall time of the whole eval (load, generation, logging, the rs-match judge, metrics, run-dir writes) is
compared with the ideal. Target: ratio >= 0.95 up to the server's capacity.

    .venv/bin/python benchmarks/openai_throughput.py [--latency 1.0] [--rounds 10] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request  # at module level: the handler's annotations are resolved from here

REPLY = "I'm sorry, but I can't help with that."


def serve(port: int, latency: float, capacity: int) -> None:
    """The stand-in server (run in its own process, so that it shares no interpreter lock with the client)."""
    import uvicorn

    app = FastAPI()
    slots: list[asyncio.Semaphore] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        if not slots:
            slots.append(asyncio.Semaphore(capacity))
        async with slots[0]:
            await asyncio.sleep(latency)
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 10, "total_tokens": 18}}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096, timeout_keep_alive=60)


def start_server(latency: float, capacity: int) -> tuple[str, subprocess.Popen[bytes]]:
    """The stand-in on a free loopback port, in a child process; its base URL and the process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(latency),
                             "--capacity", str(capacity)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"http://127.0.0.1:{port}/v1", proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the stand-in server did not start")


def run_eval(url: str, concurrency: int, rounds: int, rounds_per_batch: int, work: Path) -> tuple[float, int]:
    """(seconds, rows) of one whole eval at ``concurrency`` requests in flight."""
    import safereason

    rows = concurrency * rounds
    bench = work / f"prompts-{concurrency}.jsonl"
    bench.write_text("".join(json.dumps({"id": f"p{i:04d}", "prompt": f"Question number {i}?"}) + "\n"
                             for i in range(rows)))
    out = work / f"run-{concurrency}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = safereason.evaluate(model="stand-in", backend="openai", benchmark=str(bench), id_column="id", k=1,
                              max_new_tokens=16, batch_size=concurrency * rounds_per_batch, reasoning_format="none",
                              n_bootstrap=0, out=str(out), progress=False,
                              backend_options={"base_url": url, "concurrency": concurrency, "max_retries": 0})
    seconds = time.perf_counter() - t0
    assert len(res.samples) == rows and all(s.response == REPLY for s in res.samples)
    return seconds, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=1.0, help="seconds the server takes per request")
    ap.add_argument("--capacity", type=int, default=64, help="requests the server serves at once")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of `concurrency` requests per eval")
    ap.add_argument("--rounds-per-batch", type=int, default=4, help="rounds per generate call (batch_size)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the server's own process
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.latency, args.capacity)
        return
    logging.getLogger("safereason").setLevel(logging.ERROR)  # the no-tokenizer warning, once per eval

    url, proc = start_server(args.latency, args.capacity)
    work = Path(tempfile.mkdtemp(prefix="safereason-openai-bench-"))
    try:
        run_eval(url, 1, 1, 1, work)  # warm-up: imports, the client's loop thread
        print(f"stand-in: latency {args.latency:g} s, capacity {args.capacity}; {args.rounds} rounds per eval")
        print(f"{'concurrency':>11} {'rows':>5} {'seconds':>8} {'req/s':>8} {'ideal':>8} {'ratio':>6}")
        for c in args.concurrency:
            seconds, rows = run_eval(url, c, args.rounds, args.rounds_per_batch, work)
            ideal = min(c, args.capacity) / args.latency
            rate = rows / seconds
            print(f"{c:>11} {rows:>5} {seconds:>8.2f} {rate:>8.1f} {ideal:>8.1f} {rate / ideal:>6.3f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
