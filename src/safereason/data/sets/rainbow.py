"""The Rainbow-Teaming-style prompt archives TARS drew its ``rainbow`` prompts from (Kim et al., 2025; archives
in the style of Samvelyan et al., 2024, "Rainbow Teaming", arXiv:2402.16822): ``rainbow-teaming``.

Seven archives (``scripts/data/rainbow_archives/archive_{1..7}.json``), each a 10 x 12 grid of cells holding one
adversarial prompt and its score: 840 prompts, label harmful. Upstream does not name the grid's axes (its rows
appear to vary the harm topic and its columns the attack style: slang, technical jargon, role play ...), so the
category is the grid row (``row-RR``) and the column stays in meta. Ids are
``rainbow-<archive>-<row>-<column>`` (1-based archive, 0-based cell indices as in the JSON); meta holds
``archive``, ``row``, ``column`` and the cell's ``score``. The dataset hash is a listing of the seven files'
sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from safereason.data.fetch import _GH, _is_url, _listing, _read_registered
from safereason.data.sets.tars import COMMIT
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Row, Table, _check, _decode, _meta, _require, _text
from safereason.errors import DataError
from safereason.records import Prompt

REMOTE = f"{_GH}/danielkty/tars/{COMMIT}/scripts/data/rainbow_archives"
#: sha256 of archive_N.json at COMMIT (danielkty/tars scripts/data/rainbow_archives/)
SHA256 = {
    1: "282f9c53ccab525216400364ea702cf4d66b9e1c04a1b909da2a4268e8528874",
    2: "201a155c1a352d27e94e877c49ff19b8672175e7beaf94435cc451acf24c9b8d",
    3: "79bd6e6bcb9c5bab7ccd9032048431e0f670ea35226878035a1ef8cb273745d1",
    4: "b666b4ab700372332b30ba532e87e133d25df52f9fd542c3536e6420698e7797",
    5: "9f4a0b354bc1eecfe92f5099546f1f43fef79669baadf01c14fb7a588928cad3",
    6: "bafbb47c03a7badb998028c9daf20bac61d605c3261e944123b977821c54b99b",
    7: "89062c082136c8a3acb1d2575ccd89fa51ddc762852ffe6348ef73456167c44b",
}


def _read(spec: BenchmarkSpec, data_dir: Path | None) -> tuple[bytes, str, Table]:
    """One row per cell, archive by archive, row-major."""
    files: dict[str, str] = {}
    sources: set[str] = set()
    rows: list[Row] = []
    for n, digest in SHA256.items():
        name = f"archive_{n}.json"
        part = replace(spec, local_path=f"tars/rainbow_archives/{name}", remote=f"{REMOTE}/{name}", sha256=digest,
                       read=None)
        data, source, _ = _read_registered(part, data_dir)
        files[name] = hashlib.sha256(data).hexdigest()
        local = data_dir is not None and not _is_url(source)
        sources.add(str((data_dir / "tars" / "rainbow_archives").resolve()) if local else REMOTE)
        try:
            grid = json.loads(_decode(data, source))
        except json.JSONDecodeError as e:
            raise DataError(f"{source} line {e.lineno}: malformed JSON ({e.msg})") from None
        if not (isinstance(grid, list) and all(isinstance(r, list) and all(isinstance(c, dict) for c in r)
                                               for r in grid)):
            raise DataError(f"{source}: expected a grid (a list of lists) of {{prompt, score}} cells")
        for i, cells in enumerate(grid):
            for j, cell in enumerate(cells):
                rows.append({"archive": n, "row": i, "column": j, **cell})
    source = " + ".join(sorted(sources))
    return _listing(files), source, Table(source, ("archive", "row", "column", "prompt", "score"), rows)


def parse(t: Table) -> list[Prompt]:
    _require(t, "prompt", "archive", "row", "column")
    return _check([
        Prompt(id=f"rainbow-{r['archive']}-{r['row']:02d}-{r['column']:02d}", prompt=_text(t, i, "prompt"),
               category=f"row-{r['row']:02d}", label="harmful", meta=_meta(r, "prompt"))
        for i, r in enumerate(t.rows)
    ], t)


SPEC = BenchmarkSpec("rainbow-teaming", "Rainbow-Teaming-style archives from TARS: 7 grids of 10 x 12 adversarial "
                     "prompts (840) with scores; category = grid row", "tars/rainbow_archives", REMOTE, parse,
                     sha256="c4657b3a4f4cbbaa500fb16c2fa086780fee0291e7fbce3c1a05f348be4f0c22", read=_read)
