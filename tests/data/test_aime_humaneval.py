"""The AIME 2024 and HumanEval utility sets: pinned sources, ids, labels and what their judges need in meta."""

from __future__ import annotations

import gzip
import urllib.error
from pathlib import Path

import pytest

from safereason.data import fetch, load_benchmark
from safereason.data.sets.aime2024 import AIME2024_SHA256
from safereason.data.sets.humaneval import HUMANEVAL_SHA256
from safereason.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED_DATA / "humaneval").is_dir(), reason=f"no shared data at {SHARED_DATA}")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAFEREASON_DATA", raising=False)
    monkeypatch.setenv("SAFEREASON_CACHE", str(tmp_path / "cache"))

    def offline(url: str) -> bytes:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(fetch, "_download", offline)


@needs_data
def test_aime2024() -> None:
    bench = load_benchmark("aime2024", data_dir=SHARED_DATA)
    assert bench.sha256 == AIME2024_SHA256 and len(bench.prompts) == 30
    ids = [p.id for p in bench.prompts]
    assert {f"aime2024-{exam}-{n}" for exam in ("I", "II") for n in range(1, 16)} == set(ids)
    assert all(p.label == "benign" and p.meta["gold"].isdigit() and "\\boxed{}" in p.prompt for p in bench.prompts)
    assert {p.category for p in bench.prompts} == {"AIME I", "AIME II"}


@needs_data
def test_humaneval_prompt_and_meta() -> None:
    bench = load_benchmark("humaneval", data_dir=SHARED_DATA)
    assert bench.sha256 == HUMANEVAL_SHA256 and len(bench.prompts) == 164
    for p in bench.prompts:
        assert p.label == "benign" and p.id == "humaneval-" + p.meta["task_id"].split("/")[1]
        assert p.meta["code_prompt"].rstrip() in p.prompt and "```python" in p.prompt
        assert "def check(" in p.meta["test"] and p.meta["entry_point"] in p.meta["code_prompt"]
        assert "canonical_solution" not in p.meta


def test_humaneval_remote_gzip_must_match_the_pinned_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "_download", lambda url: gzip.compress(b'{"task_id": "x"}\n'))
    with pytest.raises(DataError, match="not the pinned"):
        load_benchmark("humaneval")
    monkeypatch.setattr(fetch, "_download", lambda url: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    with pytest.raises(DataError, match="could not download humaneval"):
        load_benchmark("humaneval")
