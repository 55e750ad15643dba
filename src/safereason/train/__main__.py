"""``python -m safereason.train {sft,grpo,dpo} ARGS``: the same as ``safereason train ...``.

The entry point of the module forms that ``accelerate launch -m`` runs: ``python -m safereason.train.sft ARGS``
(and ``.grpo``, ``.dpo``) hand their ``__main__`` to :func:`main`, so that the training modules themselves never
import the command-line layer; the CLI stays a thin layer over them, not a dependency of them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(trainer: str | None = None, argv: Sequence[str] | None = None) -> None:
    """Run ``safereason train [TRAINER] ARGS`` (``argv``: default ``sys.argv[1:]``) with the CLI's handling of
    errors (one line, exit 2) and of Ctrl-C (exit 130, "re-run the same command to resume")."""
    from safereason.cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    sys.argv[1:] = ["train", *([trainer] if trainer else []), *args]
    cli_main()


if __name__ == "__main__":
    main()
