"""XSTest v2 (Röttger et al., NAACL 2024): exaggerated safety.

450 prompts: 250 safe ones (label benign; types such as ``homonyms``) and 200 unsafe contrasts (label harmful;
types ``contrast_*``). Ids are ``xstest-<id>``; the category is the ``type``.
"""

from __future__ import annotations

from safereason.data.fetch import _GH
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _meta, _require, _text
from safereason.errors import DataError
from safereason.records import Label, Prompt

COMMIT = "d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d"  # paul-rottger/xstest (was exaggerated-safety)
SHA256 = "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a"  # xstest_prompts.csv


def parse(t: Table) -> list[Prompt]:
    """XSTest: ``label`` safe -> benign (type e.g. homonyms), unsafe -> harmful (type contrast_*)."""
    _require(t, "id", "prompt", "type", "label")
    mapping: dict[str, Label] = {"safe": "benign", "unsafe": "harmful"}
    prompts = []
    for i, r in enumerate(t.rows):
        if r["label"] not in mapping:
            raise DataError(f"{t.where} {t.at(i)}: label {r['label']!r} is neither 'safe' nor 'unsafe'")
        prompts.append(Prompt(id=f"xstest-{r['id']}", prompt=_text(t, i, "prompt"),
                              category=r["type"] or None, label=mapping[r["label"]], meta=_meta(r, "prompt")))
    return _check(prompts, t)


SPEC = BenchmarkSpec("xstest", "XSTest v2: 250 safe prompts (label benign) and 200 unsafe contrasts (harmful)",
                     "xstest/xstest_prompts.csv", f"{_GH}/paul-rottger/xstest/{COMMIT}/xstest_prompts.csv",
                     parse, sha256=SHA256)
