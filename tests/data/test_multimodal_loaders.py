"""The multimodal benchmark loaders (FigStep, MM-SafetyBench) against the shared public files, and from a stubbed
pinned remote."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from safereason.data import BENCHMARKS, fetch, load_benchmark
from safereason.data import benchmarks as bm
from safereason.errors import DataError

FIGSTEP_CATEGORIES = {
    "Illegal Activity", "Hate Speech", "Malware Generation", "Physical Harm", "Fraud", "Adult Content",
    "Privacy Violation", "Legal Opinion", "Financial Advice", "Health Consultation",
}
#: questions per scenario file, from mm-safetybench/PROVENANCE.md
MMSB_COUNTS = [97, 163, 44, 144, 122, 154, 109, 153, 139, 130, 167, 109, 149]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's data dir or download cache, and none reaches the network."""
    monkeypatch.delenv("SAFEREASON_DATA", raising=False)
    monkeypatch.setenv("SAFEREASON_CACHE", str(tmp_path / "cache"))

    def offline(url: str) -> bytes:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(fetch, "_download", offline)


def _serve_from(shared: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stub the pinned remotes with the shared files (same bytes as upstream at the pinned commits)."""
    fetched: list[str] = []
    figstep = f"{bm._GH}/ThuCCSLab/FigStep/{bm.FIGSTEP_COMMIT}/data/"
    mmsb = f"{bm.MMSB_REMOTE}/"

    def serve(url: str) -> bytes:
        fetched.append(url)
        if url.startswith(figstep):
            return (shared / "figstep" / url[len(figstep):]).read_bytes()
        if url.startswith(mmsb):
            return (shared / "mm-safetybench" / url[len(mmsb):].removeprefix("data/")).read_bytes()
        raise urllib.error.HTTPError(url, 404, "not found", {}, None)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch, "_download", serve)
    return fetched


def _listing_hash(root: Path, rels: list[str]) -> str:
    lines = "".join(f"{hashlib.sha256((root / r).read_bytes()).hexdigest()}  {r}\n" for r in sorted(rels))
    return hashlib.sha256(lines.encode()).hexdigest()


def test_registered_with_honest_descriptions() -> None:
    for name in ("figstep", "figstep-tiny", "mm-safetybench", "mm-safetybench-tiny"):
        spec = BENCHMARKS.get(name)
        assert spec.read is not None and spec.local_path and spec.sha256
    assert "TEXT ONLY, no images" in BENCHMARKS.get("mm-safetybench").description
    assert "Only rows whose image is found are loaded" in BENCHMARKS.get("figstep").description


def test_figstep_tiny(shared_data: Path) -> None:
    bench = load_benchmark("figstep-tiny", data_dir=shared_data)
    ps = bench.prompts
    assert len(ps) == 50 and len({p.id for p in ps}) == 50
    assert Counter(p.category for p in ps) == {c: 5 for c in FIGSTEP_CATEGORIES}
    for p in ps:
        assert p.label == "harmful" and p.prompt == bm.FIGSTEP_TEXT
        assert p.prompt.startswith("The image shows a list numbered 1, 2, and 3, but the items are empty.")
        (image,) = p.images
        assert Path(image).is_absolute() and Path(image).is_file()
        cat, task = p.id.removeprefix("figstep-").split("-")
        assert Path(image).name == f"query_ForbidQI_{cat}_{task}_6.png"
        assert p.meta["question"] and p.meta["instruction"] and p.meta["image_file"].startswith("images/")
    root = shared_data / "figstep"
    assert bench.source == str((root / "question/SafeBench-Tiny.csv").resolve())
    # the dataset hash covers the question file and every image used, not where the data dir lies
    assert bench.sha256 == _listing_hash(root, ["question/SafeBench-Tiny.csv", *(p.meta["image_file"] for p in ps)])


def test_figstep_loads_the_rows_that_have_images(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="safereason.data.benchmarks"):
        bench = load_benchmark("figstep", data_dir=shared_data)
    assert "450 of 500 prompts have no image" in caplog.text
    tiny = load_benchmark("figstep-tiny", data_dir=shared_data)
    assert [p.id for p in bench.prompts] == [p.id for p in tiny.prompts]  # the same 50, under the same ids
    assert [p.images for p in bench.prompts] == [p.images for p in tiny.prompts]
    assert len(load_benchmark("figstep", data_dir=shared_data, limit=2).prompts) == 2


def test_figstep_without_any_image_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "figstep/question").mkdir(parents=True)
    shutil.copy(shared_data / "figstep/question/safebench.csv", tmp_path / "figstep/question/safebench.csv")
    with pytest.raises(DataError, match="none of the 500 FigStep images"):
        load_benchmark("figstep", data_dir=tmp_path)


def test_figstep_from_pinned_remote(shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fetched = _serve_from(shared_data, monkeypatch)
    bench = load_benchmark("figstep-tiny")
    assert bench.source.startswith(f"https://raw.githubusercontent.com/ThuCCSLab/FigStep/{bm.FIGSTEP_COMMIT}/")
    assert len(bench.prompts) == 50 and len(fetched) == 51
    for p in bench.prompts:
        assert Path(p.images[0]).is_file() and str(tmp_path / "cache") in p.images[0]
    assert bench.sha256 == load_benchmark("figstep-tiny", data_dir=shared_data).sha256
    load_benchmark("figstep-tiny")  # cached: no second download
    assert len(fetched) == 51


def test_figstep_offline_without_data_dir() -> None:
    with pytest.raises(DataError, match="could not download figstep-tiny"):
        load_benchmark("figstep-tiny")


def test_mm_safetybench_is_text_only(shared_data: Path) -> None:
    bench = load_benchmark("mm-safetybench", data_dir=shared_data)
    ps = bench.prompts
    assert len(ps) == sum(MMSB_COUNTS) == 1680 and len({p.id for p in ps}) == 1680
    by_scenario = Counter(p.meta["scenario"] for p in ps)
    assert [by_scenario[s] for s in bm.MMSB_SCENARIOS] == MMSB_COUNTS
    assert {p.category for p in ps} == {c for c, _ in bm.MMSB_SCENARIOS.values()}
    assert all(p.images == [] and p.label == "harmful" for p in ps)
    first = json.loads((shared_data / "mm-safetybench/processed_questions/01-Illegal_Activitiy.json").read_text())["0"]
    p = ps[0]
    assert p.id == "mm-safetybench-01-0" and p.prompt == first["Question"]
    assert p.meta["Rephrased Question"] == first["Rephrased Question"] and "GPT-Pred" not in p.meta
    assert bench.sha256 == BENCHMARKS.get("mm-safetybench").sha256  # the shared copy is the pinned data
    assert bench.source == str((shared_data / "mm-safetybench").resolve())


def test_mm_safetybench_tiny(shared_data: Path) -> None:
    bench = load_benchmark("mm-safetybench-tiny", data_dir=shared_data)
    listed = json.loads((shared_data / "mm-safetybench/TinyVersion_ID_List.json").read_text())
    assert len(bench.prompts) == 168
    assert Counter(p.meta["scenario"] for p in bench.prompts) == {e["Scenario"]: len(e["Sampled_ID_List"])
                                                                  for e in listed}
    full = {p.id: p for p in load_benchmark("mm-safetybench", data_dir=shared_data).prompts}
    assert all(full[p.id] == p for p in bench.prompts)
    assert bench.sha256 == BENCHMARKS.get("mm-safetybench-tiny").sha256


def test_mm_safetybench_from_pinned_remote(shared_data: Path, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    fetched = _serve_from(shared_data, monkeypatch)
    bench = load_benchmark("mm-safetybench-tiny")
    assert len(fetched) == 14 and bench.source == bm.MMSB_REMOTE
    assert bench.sha256 == BENCHMARKS.get("mm-safetybench-tiny").sha256

    def tampered(url: str) -> bytes:
        return b'{"0": {"Question": "changed"}}'

    monkeypatch.setenv("SAFEREASON_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(fetch, "_download", tampered)
    with pytest.raises(DataError, match="not the pinned"):
        load_benchmark("mm-safetybench")
