"""MM-SafetyBench (Liu et al., "MM-SafetyBench: A Benchmark for Safety Evaluation of Multimodal LLMs", ECCV 2024),
as text only: 1680 questions in 13 scenarios (``mm-safetybench``), or the 168 of upstream's tiny version
(``mm-safetybench-tiny``). Label harmful; ids are ``mm-safetybench-<scenario number>-<question id>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from safereason.data.fetch import _GH, _is_url, _listing, _read_registered
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Row, Table, _check, _decode, _meta, _require, _text
from safereason.errors import DataError
from safereason.records import Prompt

#: upstream isXinLiu/MM-SafetyBench at its last commit, fetched through the fork syk1052/MM-SafetyBench, which
#: carries the upstream history (the upstream repo itself could not be reached when the data was pinned)
MMSB_COMMIT = "b80eedea3db312c09ded2082813390f68e750ef3"
MMSB_REMOTE = f"{_GH}/syk1052/MM-SafetyBench/{MMSB_COMMIT}"
#: scenario file (upstream spelling) -> (category, sha256 of data/processed_questions/<file>.json at MMSB_COMMIT)
MMSB_SCENARIOS = {
    "01-Illegal_Activitiy": ("Illegal Activity", "e2db149c809c86fc5e6ef285bc17ca45228b19349ebd73125e7408098a273be9"),
    "02-HateSpeech": ("Hate Speech", "462672c4ca05d43a5502de61cbee0f5c12b76c9e7164e7b947f0ce8d1971bcb8"),
    "03-Malware_Generation": ("Malware Generation",
                              "da4ceec8e02f130cac70ffabc6127f9d2a9d7466cd9f992c5f9c7ecb0a9645ae"),
    "04-Physical_Harm": ("Physical Harm", "f58c97aee2e22257b1b813d94ac7147cdb9e3c1b9c93a03eb14e1f3f32ab879e"),
    "05-EconomicHarm": ("Economic Harm", "9146c5eebeed31fcb48a1d622edca2e41c8880430c7e5ba715ed74e2f799ffd7"),
    "06-Fraud": ("Fraud", "869f47fa08e683d3220e7a4ec071482324748346d17462e0060cedec03cdadc0"),
    "07-Sex": ("Sex", "23f4080200eca1701ce15295784e2c2291b2a8bb9883fd34ba92933b4297ceb7"),
    "08-Political_Lobbying": ("Political Lobbying",
                              "a9c64065b449a1a14ad332ff1fb630a55e8cf5b8f99f2269b230a6414cc2526e"),
    "09-Privacy_Violence": ("Privacy Violence", "836d48648f9bc6ff1bf32291a7b05a2248c64c15bf363e0afcf8566922e5fdcd"),
    "10-Legal_Opinion": ("Legal Opinion", "7281f218f74090dafe4df0a2b27c5e6f85949727a14e51418eaadda93811ce72"),
    "11-Financial_Advice": ("Financial Advice", "3220e4b9c8c9c588dfb61d4805b5dc1be9839089037b3701daea9af4a9ee298f"),
    "12-Health_Consultation": ("Health Consultation",
                               "f3163717d2e397494a69a9462bb61f36c6ca1533b8f36d715593f50377df6895"),
    "13-Gov_Decision": ("Gov Decision", "83d3188cf488f08b82baedefdf6a7f28927834ea76e4de0217048bd217a9a0c9"),
}
MMSB_TINY_SHA256 = "85cc71384797828556e026753a1dd320d45b98a3cb4855e1753156f2e58fb457"  # TinyVersion_ID_List.json
#: The mm-safetybench specs' own sha256 is the dataset hash of the pinned files (that of their :func:`_listing`);
#: each downloaded file is checked against its sha256 above.


def _mmsb_reader(tiny: bool) -> Callable[[BenchmarkSpec, Path | None], tuple[bytes, str, Table]]:
    """The 13 scenario files (each from the data dir, else pinned remote); ``tiny`` keeps the 168 questions of
    upstream's ``TinyVersion_ID_List.json``. One row per question, in scenario then file order."""
    def read(spec: BenchmarkSpec, data_dir: Path | None) -> tuple[bytes, str, Table]:
        files: dict[str, str] = {}
        sources: set[str] = set()

        def get(rel: str, upstream: str, digest: str) -> Any:
            part = replace(spec, local_path=f"mm-safetybench/{rel}", remote=f"{MMSB_REMOTE}/{upstream}",
                           sha256=digest, read=None)
            data, source, _ = _read_registered(part, data_dir)
            files[rel] = hashlib.sha256(data).hexdigest()
            local = data_dir is not None and not _is_url(source)
            sources.add(str((data_dir / "mm-safetybench").resolve()) if local else MMSB_REMOTE)
            try:
                return json.loads(_decode(data, source))
            except json.JSONDecodeError as e:
                raise DataError(f"{source} line {e.lineno}: malformed JSON ({e.msg})") from None

        keep: set[tuple[str, str]] | None = None
        if tiny:
            listed = get("TinyVersion_ID_List.json", "TinyVersion_ID_List.json", MMSB_TINY_SHA256)
            try:
                keep = {(e["Scenario"], str(k)) for e in listed for k in e["Sampled_ID_List"]}
            except (TypeError, KeyError):
                raise DataError("TinyVersion_ID_List.json: expected a list of {Scenario, Sampled_ID_List}") from None
        rows: list[Row] = []
        for scenario, (_, digest) in MMSB_SCENARIOS.items():
            rel = f"processed_questions/{scenario}.json"
            questions = get(rel, f"data/{rel}", digest)
            if not isinstance(questions, dict) or not all(isinstance(q, dict) for q in questions.values()):
                raise DataError(f"mm-safetybench/{rel}: expected an object of question records")
            for key, q in questions.items():
                if keep is None or (scenario, key) in keep:
                    # GPT-Pred is the raw GPT-4 output that the other fields were parsed from
                    rows.append({"scenario": scenario, "question_id": key,
                                 **{k: v for k, v in q.items() if k != "GPT-Pred"}})
        if keep is not None and len(rows) != len(keep):
            found = {(r["scenario"], r["question_id"]) for r in rows}
            missing = sorted(keep - found)[:3]
            raise DataError(f"TinyVersion_ID_List.json names questions the scenario files lack: {missing}")
        source = " + ".join(sorted(sources))
        columns = tuple(dict.fromkeys(k for r in rows for k in r))
        return _listing(files), source, Table(source, columns, rows)

    return read


def _mmsb(t: Table) -> list[Prompt]:
    """MM-SafetyBench as text only: the original question (the paper's text-only baseline). The rephrased
    questions point at an image ("The bottom of the image shows a phrase of an activity...") that is not
    loaded, so they stay in meta with the key phrase."""
    _require(t, "scenario", "question_id", "Question")
    return _check([
        Prompt(id=f"mm-safetybench-{r['scenario'][:2]}-{r['question_id']}", prompt=_text(t, i, "Question"),
               category=MMSB_SCENARIOS[r["scenario"]][0], label="harmful", meta=_meta(r, "Question"))
        for i, r in enumerate(t.rows)
    ], t)


_MMSB_TEXT_ONLY = ("TEXT ONLY, no images: the SD / TYPO images are not in git and are not loaded, so this is the "
                   "paper's text-only baseline (the original questions), not its image attack; the image-referring "
                   "rephrased questions and key phrases are in meta. Scenarios 10-13 ask for specialised advice "
                   "rather than harmful content. CC BY-NC 4.0")


SPECS = (
    BenchmarkSpec("mm-safetybench", "MM-SafetyBench: 1680 questions in 13 scenarios, label harmful. "
                  + _MMSB_TEXT_ONLY, "mm-safetybench/processed_questions", f"{MMSB_REMOTE}/data/processed_questions",
                  _mmsb, sha256="9fa5f487432235a70abed06f0bb559e95896529fc5ec31f2abe2eef78c6b6497",
                  read=_mmsb_reader(tiny=False)),
    BenchmarkSpec("mm-safetybench-tiny", "MM-SafetyBench tiny: the 168 questions of upstream's TinyVersion_ID_List, "
                  "label harmful. " + _MMSB_TEXT_ONLY, "mm-safetybench/processed_questions",
                  f"{MMSB_REMOTE}/data/processed_questions", _mmsb,
                  sha256="6b4d5ffc3ad685694250714768fc0636cbfa846d6f7388d58a0ca249ff3a50da",
                  read=_mmsb_reader(tiny=True)),
)
