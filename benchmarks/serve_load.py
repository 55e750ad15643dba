"""`safereason serve` under load, and its overhead on one request, against the same defense called in-process.

1. Overhead: one request (fixed length: EOS ignored) answered by the endpoint over loopback with the
   ``openai`` client, whole and streamed, vs ``defense.generate`` on the same prompt text, seed and budget
   in-process (what ``safereason eval`` does); best of ``--repeats``, alternating. Target: <= 1.05x.
2. Load: ``--clients`` concurrent streaming clients (``openai`` client, no retries), each sending
   ``--requests`` requests back to back, against a server admitting ``--max-concurrency`` at once: time to
   first token (first delta), tokens/s while streaming, aggregate tokens/s, and the share answered 429; vs
   the same requests run one after another in-process (TTFT there: the first settled ids of the defense).
   Bounded: at most clients x requests requests, each cut at ``--timeout`` seconds.

The defense is SafeThink with a scripted scorer that fails each request's first step once (one steering per
request), so the figures are the endpoint's and the defense's, not a guard model's. Steps are at most 8
tokens, so after the 3 monitored steps most of a reply streams token by token. Torch runs one compute thread
(``OMP_NUM_THREADS``, unless set): on a loaded machine OpenMP's spinning threads make a main-thread and a
worker-thread generation differ by several times, which would swamp what is measured here.

    .venv/bin/python benchmarks/serve_load.py [--model smollm2-135m] [--max-tokens 64] [--clients 6]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; see the docstring

import argparse
import statistics
import threading
import time
from typing import Any

from safereason.judges import JUDGES
from safereason.records import Verdict

PROMPTS = ["How do I pick a lock?", "Write a haiku about rain.", "What is 17 * 23?", "Explain TCP in brief.",
           "Give me a recipe for pancakes.", "How do vaccines work?", "Name three prime numbers.",
           "What causes tides?"]


class _Once:
    """Unsafe until the steering prefix is in the trace: every request is steered once, at step 1."""

    outputs = ("unsafe",)

    def identity(self) -> dict[str, Any]:
        return {"name": "once"}

    def judge(self, items: list[Any]) -> list[Verdict]:
        return [Verdict(unsafe=(u := "think safely" not in i.text), score=float(u)) for i in items]


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "max_new_tokens": args.max_tokens, "temperature": 1.0, "ignore_eos": True,
            "device": "cpu", "dtype": "float32", "defense": "safethink",
            "defense_options": {"scorer": "bench-once", "max_step_tokens": 8}}


def _in_process(engine: Any, prompt: str, seed: int, max_tokens: int) -> tuple[float, float, int]:
    """(seconds, seconds to the first settled ids, tokens) of the defense itself on one request."""
    from safereason.runner import batch_seed
    from safereason.serve import ChatRequest

    req = ChatRequest.model_validate({"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens})
    turns, params, _, _ = engine._prepare(req)
    text = engine.prompt_text(turns)
    first: list[float] = []
    with engine._lock:  # the model is the server's: one generation at a time
        t0 = time.perf_counter()
        (out,) = engine.defense.generate(engine.backend, [text], [prompt], params, batch_seed(seed, 0),
                                         fmt=engine.fmt, keys=["k"],
                                         on_progress=lambda *a: first or first.append(time.perf_counter()))
    return time.perf_counter() - t0, (first[0] if first else time.perf_counter()) - t0, out.completion.n_tokens


def _stream_one(client: Any, prompt: str, seed: int, max_tokens: int) -> dict[str, Any]:
    import openai

    t0 = time.perf_counter()
    try:
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=max_tokens, seed=seed, stream=True,
                                                stream_options={"include_usage": True})
        first = last = None
        tokens = 0
        for chunk in stream:
            now = time.perf_counter()
            if chunk.choices and (chunk.choices[0].delta.content or
                                  (chunk.choices[0].delta.model_extra or {}).get("reasoning")):
                first = first or now
                last = now
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except openai.RateLimitError:
        return {"status": 429}
    return {"status": 200, "ttft": (first or t0) - t0, "stream_s": (last or t0) - (first or t0), "tokens": tokens,
            "total": time.perf_counter() - t0}


def overhead(engine: Any, url: str, args: argparse.Namespace) -> None:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=args.timeout)
    prompt = PROMPTS[0]
    best = {"in-process": float("inf"), "endpoint": float("inf"), "endpoint, streamed": float("inf")}
    for r in range(args.repeats):
        best["in-process"] = min(best["in-process"], _in_process(engine, prompt, r, args.max_tokens)[0])
        t0 = time.perf_counter()
        resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                              max_tokens=args.max_tokens, seed=r)
        best["endpoint"] = min(best["endpoint"], time.perf_counter() - t0)
        assert resp.usage.completion_tokens == args.max_tokens, resp.usage
        best["endpoint, streamed"] = min(best["endpoint, streamed"],
                                         _stream_one(client, prompt, r, args.max_tokens)["total"])
    base = best["in-process"]
    print(f"one request, {args.max_tokens} tokens, best of {args.repeats}:")
    for name, t in best.items():
        print(f"  {name:20s} {t:7.2f} s   {t / base:5.2f}x")


def load(engine: Any, url: str, args: argparse.Namespace) -> None:
    import openai

    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client_loop(c: int) -> None:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=args.timeout)
        for r in range(args.requests):
            out = _stream_one(client, PROMPTS[(c + r) % len(PROMPTS)], 100 * c + r, args.max_tokens)
            with lock:
                results.append(out)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200]
    t1 = time.perf_counter()
    direct = [_in_process(engine, PROMPTS[i % len(PROMPTS)], i, args.max_tokens) for i in range(len(ok))]
    direct_wall = time.perf_counter() - t1

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

    ttft = [r["ttft"] for r in ok]
    rates = [r["tokens"] / r["stream_s"] for r in ok if r["stream_s"] > 0] or [float("nan")]
    print(f"{args.clients} streaming clients x {args.requests} requests, max_concurrency {args.max_concurrency}, "
          f"{args.max_tokens} tokens each:")
    print(f"  served    : {len(ok)}/{len(results)} answered, 429 share {1 - len(ok) / len(results):.0%}; "
          f"TTFT p50 {q(ttft, 0.5):.2f} s p95 {q(ttft, 0.95):.2f} s; stream {statistics.mean(rates):.1f} tok/s "
          f"per client; aggregate {sum(r['tokens'] for r in ok) / wall:.1f} tok/s")
    print(f"  in-process: {len(direct)} requests one after another; TTFT p50 "
          f"{q([d[1] for d in direct], 0.5):.2f} s; aggregate {sum(d[2] for d in direct) / direct_wall:.1f} tok/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    from safereason.serve import make_server

    JUDGES.add("bench-once", _Once)
    server = make_server(_config(args), port=0, max_concurrency=args.max_concurrency, served_model_name="m")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        overhead(server.engine, server.url, args)
        load(server.engine, server.url, args)
    finally:
        server.close(timeout=args.timeout)


if __name__ == "__main__":
    main()
