"""What a registered prompt set is (:class:`BenchmarkSpec`), what loading gives (:class:`LoadedBenchmark`),
and the registry of sets by name (filled by :mod:`safereason.data.sets`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from safereason.data.tables import Table
from safereason.records import Prompt
from safereason.registry import Registry


@dataclass(frozen=True)
class BenchmarkSpec:
    """A named prompt set: where its file lies in a data dir, where it is published, how to parse it."""

    name: str
    description: str
    #: path relative to the data dir, e.g. ``strongreject/strongreject_dataset.csv``
    local_path: str | None
    #: pinned source: a raw GitHub URL at a commit, or ``hf://owner/name@revision/path`` (a dataset repo)
    remote: str | None
    #: one Prompt per row of the table, in row order
    parse: Callable[[Table], list[Prompt]]
    #: sha256 of the pinned remote file where known; a download that differs is refused
    sha256: str | None = None
    #: a file shipped inside the package (the built-in sets), relative to ``safereason/data``
    resource: str | None = None
    #: for a set that is more than one file (FigStep's images, MM-SafetyBench's scenario files): reads it from the
    #: data dir (else the pinned remote) and returns (the bytes the dataset hash is taken of, source, table)
    read: Callable[[BenchmarkSpec, Path | None], tuple[bytes, str, Table]] | None = None


@dataclass(frozen=True)
class LoadedBenchmark:
    name: str  # benchmark name, or the local file path as given
    source: str  # the path or URL actually read
    sha256: str  # of the bytes read: the dataset hash for the run manifest
    prompts: list[Prompt] = field(repr=False)


BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")


def default_data_dir() -> Path | None:
    """``$SAFEREASON_DATA`` if set: the folder that holds local copies of the registered sets."""
    env = os.environ.get("SAFEREASON_DATA")
    return Path(env).expanduser() if env else None

