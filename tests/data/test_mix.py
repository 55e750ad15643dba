"""λ mixes: exact counts and labels from the builder, and from TARS's released parquets."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from safereason.data import load_benchmark
from safereason.data.mix import build_mix, mix_counts, write_mix
from safereason.data.sets import tars
from safereason.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
#: per-file counts from shared/data/tars/PROVENANCE.md: benign (ability refusal), wildjailbreak, rainbow, aegis
TARS_COUNTS = {"0.1": (1800, 94, 67, 39), "0.3": (1400, 246, 234, 120), "0.5": (1000, 413, 391, 196),
               "0.7": (600, 575, 543, 282), "0.9": (200, 732, 715, 353)}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def sources(tmp_path: Path) -> dict[str, str]:
    harm = [{"prompt": f"harmful request {i}"} for i in range(40)]
    harm += [{"prompt": "harmful   REQUEST 3"}, {"prompt": "a benign one", "label": "benign"}]  # dup; wrong label
    ben = [{"prompt": f"benign question {i}"} for i in range(30)] + [{"prompt": "harmful request 5"}]  # cross-pool dup
    amb = [{"prompt": f"how do I kill process {i}", "label": "safe"} for i in range(20)]
    amb += [{"prompt": "unsafe contrast", "label": "unsafe"}]
    return {"harmful": write_jsonl(tmp_path / "h.jsonl", harm), "benign": write_jsonl(tmp_path / "b.jsonl", ben),
            "ambiguous": write_jsonl(tmp_path / "a.jsonl", amb)}


@pytest.mark.parametrize(("n", "lam", "want"), [
    (2000, 0.5, (1000, 500, 500)), (2000, 0.1, (200, 900, 900)), (2000, 0.9, (1800, 100, 100)),
    (7, 0.3, (2, 3, 2)), (10, 0.0, (0, 5, 5)), (10, 1.0, (10, 0, 0)), (3, 0.5, (2, 1, 0)),
])
def test_counts_are_exact(n: int, lam: float, want: tuple[int, int, int]) -> None:
    c = mix_counts(n, lam)
    assert (c.harmful, c.benign, c.ambiguous) == want and c.total == n


def test_counts_without_ambiguous_source_go_to_benign() -> None:
    c = mix_counts(10, 0.3, has_ambiguous=False)
    assert (c.harmful, c.benign, c.ambiguous) == (3, 7, 0)


@pytest.mark.parametrize("bad", [{"n": 0, "lam": 0.5}, {"n": 10, "lam": 1.5}, {"n": 10, "lam": 0.5,
                                                                                 "ambiguous_share": -0.1}])
def test_bad_counts(bad: dict) -> None:
    with pytest.raises(ConfigError):
        mix_counts(**bad)


def test_mix_labels_counts_dedup_and_seed(sources: dict[str, str]) -> None:
    mix = build_mix(sources, lam=0.5, n=60, seed=3)
    labels = Counter(r["label"] for r in mix.rows)
    assert labels == {"harmful": 30, "benign": 15, "ambiguous": 15}
    assert len({r["id"] for r in mix.rows}) == 60
    texts = [" ".join(r["prompt"].split()).casefold() for r in mix.rows]
    assert len(set(texts)) == 60  # de-duplicated
    assert "a benign one" not in texts and "unsafe contrast" not in texts  # wrong-label rows are not drawn
    assert {r["source"] for r in mix.rows if r["label"] == "ambiguous"} == {"a"}
    assert all(r["prompt"].startswith("harmful") for r in mix.rows if r["label"] == "harmful")
    again = build_mix(sources, lam=0.5, n=60, seed=3)
    assert again.rows == mix.rows  # seeded
    assert build_mix(sources, lam=0.5, n=60, seed=4).rows != mix.rows


def test_cross_pool_duplicate_stays_in_the_earlier_pool(sources: dict[str, str]) -> None:
    mix = build_mix(sources, lam=0.4, n=50, seed=0)
    assert mix.card["sources"]["harmful"]["eligible"] == 40  # 42 rows: one repeat, one labelled benign
    assert mix.card["sources"]["benign"]["eligible"] == 30  # 31 rows: one is already a harmful prompt
    assert mix.card["sources"]["ambiguous"]["eligible"] == 20  # 21 rows: one labelled unsafe
    assert not any(r["prompt"] == "harmful request 5" and r["label"] != "harmful" for r in mix.rows)


def test_too_small_source_is_a_clear_error(sources: dict[str, str]) -> None:
    with pytest.raises(DataError, match=r"harmful source .* has 40 eligible distinct prompts .* 50 needed"):
        build_mix(sources, lam=0.5, n=100, seed=0)
    with pytest.raises(ConfigError, match="needs an --ambiguous source"):
        build_mix({**sources, "ambiguous": None}, lam=0.5, n=10, ambiguous_share=0.5)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_write_round_trips(sources: dict[str, str], tmp_path: Path, suffix: str) -> None:
    mix = build_mix(sources, lam=0.5, n=20, seed=0)
    out = write_mix(mix, tmp_path / f"mix{suffix}")
    loaded = load_benchmark(str(out))
    assert [p.prompt for p in loaded.prompts] == [r["prompt"] for r in mix.rows]
    assert [p.id for p in loaded.prompts] == [r["id"] for r in mix.rows]
    assert Counter(p.meta.get("label", p.label) for p in loaded.prompts) == {"harmful": 10, "benign": 5,
                                                                              "ambiguous": 5}
    card = json.loads((tmp_path / f"mix{suffix}.card.json").read_text())
    assert card["counts"] == {"harmful": 10, "benign": 5, "ambiguous": 5} and card["seed"] == 0
    with pytest.raises(ConfigError, match="exists"):
        write_mix(mix, out)
    with pytest.raises(ConfigError, match="must end in .jsonl or .parquet"):
        write_mix(mix, tmp_path / "mix.csv")
    assert load_benchmark(str(out)).sha256 == loaded.sha256  # nothing written was lost


def test_cli_mix(sources: dict[str, str], tmp_path: Path) -> None:
    base = [sys.executable, "-m", "safereason.cli", "data", "mix", "--harmful", sources["harmful"], "--benign",
            sources["benign"], "--ambiguous", sources["ambiguous"], "--seed", "1"]
    ok = subprocess.run([*base, "--lambda", "0.5", "--n", "40", "--out", str(tmp_path / "m.jsonl")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "20 harmful, 10 benign, 10 ambiguous" in ok.stdout
    bad = subprocess.run([*base, "--lambda", "0.9", "--n", "100", "--out", str(tmp_path / "x.jsonl")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "90 needed" in bad.stderr
    assert not (tmp_path / "x.jsonl").exists()


# -- TARS's released mixes ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (SHARED_DATA / "tars" / "data").is_dir():
        pytest.skip(f"TARS data not found at {SHARED_DATA / 'tars'}")
    return SHARED_DATA


def test_tars_pins(data_dir: Path) -> None:
    assert tars.COMMIT == "32c10be22eabb4ddaadab353756bd5d2d2fb81f2"
    provenance = (data_dir / "tars" / "PROVENANCE.md").read_text()
    for file, sha in tars.SHA256.items():
        assert f"`data/{file}` | " in provenance and f"`{sha}`" in provenance
        assert hashlib.sha256((data_dir / "tars" / "data" / file).read_bytes()).hexdigest() == sha
    assert tars.BENIGN_ABILITY == "refusal" and tars.HARMFUL_ABILITIES == ("wildjailbreak", "rainbow", "aegis")


@pytest.mark.parametrize("lam", sorted(TARS_COUNTS))
def test_tars_lambda_sets(data_dir: Path, lam: str) -> None:
    bench = load_benchmark(f"tars-lambda-{lam}", data_dir=data_dir)
    assert bench.sha256 == tars.SHA256[f"train_lambda_{lam}.parquet"]
    prompts = bench.prompts
    assert len(prompts) == 2000
    assert sum(p.label == "harmful" for p in prompts) == round(2000 * float(lam))
    by = Counter(p.category if p.label == "harmful" else "benign" for p in prompts)
    benign, wjb, rainbow, aegis = TARS_COUNTS[lam]
    assert by == {"benign": benign, "wildjailbreak": wjb, "rainbow": rainbow, "aegis": aegis}
    assert all(p.meta["ability"] == "refusal" for p in prompts if p.label == "benign")
    assert prompts[0].id == f"tars-lambda-{lam}-0001"


def test_tars_test_is_strongreject_small(data_dir: Path) -> None:
    test = load_benchmark("tars-test", data_dir=data_dir)
    small = load_benchmark("strongreject-small", data_dir=data_dir)
    assert test.sha256 == tars.SHA256["test.parquet"]
    assert [p.prompt for p in test.prompts] == [p.prompt for p in small.prompts]
    assert [p.category for p in test.prompts] == [p.category for p in small.prompts]
    assert all(p.label == "harmful" for p in test.prompts)
