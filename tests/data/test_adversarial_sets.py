"""The static adversarial sets: TARS's harmful/adversarial mix rows (de-duplicated) and the Rainbow archives."""

import hashlib
import json

from safereason.data import BENCHMARKS, load_benchmark
from safereason.data.sets import rainbow, tars_adversarial


def test_tars_adversarial(shared_data):
    bench = load_benchmark("tars-adversarial", data_dir=shared_data)
    assert bench.sha256 == BENCHMARKS.get("tars-adversarial").sha256  # the listing of the five pinned λ files
    prompts = bench.prompts
    counts = {c: sum(p.category == c for p in prompts) for c in ("wildjailbreak", "rainbow", "aegis")}
    assert counts == {"wildjailbreak": 732, "rainbow": 714, "aegis": 349}
    assert len({p.prompt for p in prompts}) == len(prompts) == 1795  # de-duplicated across the λ files
    assert all(p.label == "harmful" for p in prompts)
    lam = {p.prompt for p in load_benchmark("tars-lambda-0.1", data_dir=shared_data).prompts if p.label == "harmful"}
    assert lam <= {p.prompt for p in prompts}
    first = prompts[0]
    assert first.id == f"tars-adversarial-wildjailbreak-{first.meta['extra_info']['index']}"
    assert first.meta["lambdas"][0] == "0.1"


def test_rainbow_teaming(shared_data):
    bench = load_benchmark("rainbow-teaming", data_dir=shared_data)
    assert bench.sha256 == BENCHMARKS.get("rainbow-teaming").sha256
    listing = "".join(f"{d}  archive_{n}.json\n" for n, d in sorted(rainbow.SHA256.items()))
    assert hashlib.sha256(listing.encode()).hexdigest() == bench.sha256
    prompts = bench.prompts
    assert len(prompts) == 7 * 10 * 12
    cell = json.loads((shared_data / "tars" / "rainbow_archives" / "archive_3.json").read_text())[4][7]
    p = next(p for p in prompts if p.id == "rainbow-3-04-07")
    assert (p.prompt, p.category, p.meta) == (cell["prompt"], "row-04",
                                              {"archive": 3, "row": 4, "column": 7, "score": cell["score"]})
    assert {p.category for p in prompts} == {f"row-{i:02d}" for i in range(10)}


def test_sets_read_the_pinned_remote_layout():
    assert tars_adversarial.REMOTE.endswith("danielkty/tars/32c10be22eabb4ddaadab353756bd5d2d2fb81f2/data")
    assert rainbow.REMOTE.endswith("32c10be22eabb4ddaadab353756bd5d2d2fb81f2/scripts/data/rainbow_archives")
