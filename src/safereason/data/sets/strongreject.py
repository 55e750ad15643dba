"""StrongREJECT (Souly et al., 2024, arXiv:2402.10260): forbidden prompts in 6 categories.

``strongreject``: 313 prompts; ``strongreject-small``: 60 (6 categories x 10). Every prompt is labelled harmful;
ids are ``<name>-<row>``, and the ``source`` column stays in meta.
"""

from __future__ import annotations

from collections.abc import Callable

from safereason.data.fetch import _GH
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _meta, _require, _text
from safereason.records import Prompt

COMMIT = "f7cad6c17e624e21d8df2278e918ae1dddb4cb56"  # alexandrasouly/strongreject
SHA256 = "4dd70357e4ff8b5d0ba5ebafecab5d6dd5633ce8046e3dd1c8bd93e64de44381"  # strongreject_dataset.csv
SMALL_SHA256 = "3051340e3e89a3598d764dde497d5fcda80e258ac05cc35e6bd87228ac3d467c"  # strongreject_small_dataset.csv
_REMOTE = f"{_GH}/alexandrasouly/strongreject/{COMMIT}/strongreject_dataset"


def parser(prefix: str) -> Callable[[Table], list[Prompt]]:
    """Rows to prompts with ids ``<prefix>-<row>``."""
    def parse(t: Table) -> list[Prompt]:
        _require(t, "category", "source", "forbidden_prompt")
        return _check([
            Prompt(id=f"{prefix}-{i + 1:04d}", prompt=_text(t, i, "forbidden_prompt"), label="harmful",
                   category=r["category"] or None, meta=_meta(r, "forbidden_prompt", "category"))
            for i, r in enumerate(t.rows)
        ], t)

    return parse


SPECS = (
    BenchmarkSpec("strongreject", "StrongREJECT v2: 313 forbidden prompts, 6 categories",
                  "strongreject/strongreject_dataset.csv", f"{_REMOTE}/strongreject_dataset.csv",
                  parser("strongreject"), sha256=SHA256),
    BenchmarkSpec("strongreject-small", "StrongREJECT v2 small: 60 forbidden prompts (6 categories x 10)",
                  "strongreject/strongreject_small_dataset.csv", f"{_REMOTE}/strongreject_small_dataset.csv",
                  parser("strongreject-small"), sha256=SMALL_SHA256),
)
