"""What every attack shares: its result (:class:`AttackResult`), the adversarial benchmark file it writes, and the
behaviours (prompt + target string) it attacks.

An attack run with ``--out DIR`` writes ``DIR/adversarial.jsonl``, one row per behaviour::

    {"id", "prompt": <attacked prompt>, "behavior": <original prompt>, "category", "label", "target",
     "attack": {"name", "config", "seed", "success", "steps"/"queries", "score", "history", ...}}

That file is an ordinary local benchmark (``safereason eval --benchmark DIR/adversarial.jsonl``): ``prompt``,
``id``, ``category`` and ``label`` are read as usual and every other field lands in the prompt's ``meta``, so the
attack's record travels into the eval's samples. That makes transfer (attack model A, evaluate model B) and
defended evaluation (``--defense``) one command each.

Rows are appended one behaviour at a time (one ``write`` + ``fsync``), so a killed attack loses at most the
behaviour in flight, and re-running the same command skips the behaviours already in the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safereason.errors import DataError, RunDirError, SafereasonError
from safereason.records import Prompt
from safereason.registry import Registry
from safereason.rundir import JsonlLog, RunDir, atomic_write_text, identity_diff

#: The file an attack writes in its ``--out`` directory.
ADVERSARIAL_FILE = "adversarial.jsonl"
#: What the attack was run with (name, config, seed, benchmark): a re-run with other settings is refused.
ATTACK_IDENTITY = "attack.json"


class AttackError(SafereasonError):
    """An attack that cannot run as asked (wrong backend, missing target, bad settings)."""


@dataclass(frozen=True)
class AttackInfo:
    """A registered attack, for listings and reports: what it is and what its budget counts."""

    name: str
    description: str
    budget: str  # "steps" (GCG), "queries" (PAIR) or "none" (a fixed transform such as prefilling)
    citation: str


ATTACKS: Registry[AttackInfo] = Registry("attack")


@dataclass(frozen=True)
class Behaviour:
    """One thing to attack: the benchmark prompt and the string the attack drives the model toward."""

    prompt: Prompt
    target: str


@dataclass
class AttackResult:
    """One attacked behaviour: the attacked prompt and the attack's record (what it spent, how it went)."""

    id: str
    behavior: str  # the original prompt
    prompt: str  # the attacked prompt
    target: str | None
    attack: str  # the attack's registered name
    category: str | None = None
    label: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    success: bool | None = None  # None: the attack cannot tell (only a judge on the eval can)
    steps: int | None = None  # optimisation steps spent (GCG)
    queries: int | None = None  # target-model queries spent (PAIR)
    score: float | None = None  # the attack's own objective at the end: GCG's best loss, PAIR's best judge score
    history: list[dict[str, Any]] = field(default_factory=list)  # per step / query: losses, prompts, scores
    extra: dict[str, Any] = field(default_factory=dict)  # attack-specific record (e.g. the suffix and its ids)
    #: extra top-level row fields that ``eval`` reads from the prompt's meta (e.g. a per-prompt prefill)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``adversarial.jsonl`` row."""
        record = {"name": self.attack, "config": self.config, "seed": self.seed, "success": self.success,
                  "steps": self.steps, "queries": self.queries, "score": self.score, "history": self.history,
                  **self.extra}
        row: dict[str, Any] = {"id": self.id, "prompt": self.prompt, "behavior": self.behavior}
        if self.category is not None:
            row["category"] = self.category
        if self.label is not None:
            row["label"] = self.label
        row["target"] = self.target
        row.update(self.meta)
        row["attack"] = {k: v for k, v in record.items() if v is not None}
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> AttackResult:
        """The result a row was written from (the inverse of :meth:`to_json`)."""
        rec = dict(row["attack"])
        known = {"id", "prompt", "behavior", "category", "label", "target", "attack"}
        fields = {k: rec.pop(k, None) for k in ("config", "seed", "success", "steps", "queries", "score", "history")}
        return cls(id=row["id"], behavior=row["behavior"], prompt=row["prompt"], target=row.get("target"),
                   attack=rec.pop("name"), category=row.get("category"), label=row.get("label"),
                   config=fields["config"] or {}, seed=fields["seed"], success=fields["success"],
                   steps=fields["steps"], queries=fields["queries"], score=fields["score"],
                   history=fields["history"] or [], extra=rec,
                   meta={k: v for k, v in row.items() if k not in known})


def result_for(behaviour: Behaviour, attacked_prompt: str, attack: str, **kwargs: Any) -> AttackResult:
    """An :class:`AttackResult` carrying the behaviour's id, text, category and label."""
    p = behaviour.prompt
    return AttackResult(id=p.id, behavior=p.prompt, prompt=attacked_prompt, target=behaviour.target, attack=attack,
                        category=p.category, label=p.label, **kwargs)


class AdversarialFile:
    """``DIR/adversarial.jsonl``: the rows written so far (for resume) and an atomic append per behaviour."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / ADVERSARIAL_FILE
        self._log = JsonlLog(self.path)

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Create the dir and hold its lock (one writer at a time: a second attack on it fails at once)."""
        if self.dir.exists() and not self.dir.is_dir():
            raise RunDirError(f"--out {self.dir} exists and is not a directory")
        if (self.dir.is_dir() and not (self.dir / ATTACK_IDENTITY).exists()
                and [e.name for e in self.dir.iterdir()] not in ([], ["state"])):
            raise RunDirError(f"--out {self.dir} is a non-empty directory that holds no attack; pick a new or "
                              "empty directory")
        try:
            (self.dir / "state").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create {self.dir}: {e.strerror}") from None
        with RunDir(self.dir).lock(command):
            yield

    def open(self, identity: dict[str, Any]) -> set[str]:
        """Refuse a dir holding rows of another attack config, record this one, and return the ids already done.
        Settings no row was written with yet are replaced, so a start that failed early never ties the dir."""
        ident_path = self.dir / ATTACK_IDENTITY
        stored = _read_json(ident_path)
        done = {str(r["id"]) for r in self._log.read()}
        diff = [] if stored is None else identity_diff(stored, _plain(identity))
        if diff and done:
            raise RunDirError(f"--out {self.dir} holds an attack with other settings ({'; '.join(diff[:6])}); "
                              "use a new --out directory, or the same settings to resume")
        if stored is None or diff:
            atomic_write_text(ident_path, json.dumps(_plain(identity), indent=2, ensure_ascii=False) + "\n")
        return done

    def append(self, result: AttackResult) -> None:
        self._log.append([result.to_json()])

    def results(self) -> list[AttackResult]:
        return [AttackResult.from_json(r) for r in self._log.read()]


def run_attack(out: str | Path, identity: dict[str, Any], behaviours: list[Behaviour],
               attack_one: Callable[[Behaviour], AttackResult], *,
               on_result: Callable[[AttackResult, int, int], None] | None = None) -> list[AttackResult]:
    """Attack every behaviour not yet in ``out``'s adversarial file, appending each result as it is done; return
    all of the file's results. ``on_result(result, done, total)`` reports progress."""
    adv = AdversarialFile(out)
    with adv.lock(f"attack {identity.get('attack', '')}".strip()):
        done = adv.open(identity)
        todo = [b for b in behaviours if b.prompt.id not in done]
        for i, b in enumerate(todo, 1):
            result = attack_one(b)
            adv.append(result)
            if on_result is not None:
                on_result(result, len(behaviours) - len(todo) + i, len(behaviours))
        return adv.results()


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise RunDirError(f"{path} is not valid JSON: {e}") from None


def config_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-able dict (for the row's ``attack.config`` and the dir's identity)."""
    return _plain(asdict(cfg))


# -- behaviours and their targets ---------------------------------------------------------------------------

#: HarmBench's optimizer targets ("Sure, here's ..."), keyed by ``BehaviorID``: the GCG targets of the paper's
#: HarmBench runs (centerforaisafety/HarmBench data/optimizer_targets/harmbench_targets_text.json @
#: 8e1604d1171fe8a48d8febecd22f600e462bdcdd; blob matches allenai/wildteaming, see the data's PROVENANCE.md).
HARMBENCH_TARGETS_PATH = "harmbench/optimizer_targets/harmbench_targets_text.json"
HARMBENCH_TARGETS_SHA256 = "dedcac1f8c0108ca79e36589ef9693d5af916ed70878e60fb2c4c20482872e3f"
#: A benchmark row's own target string (AdvBench's ``target``, an adversarial file's ``target``).
TARGET_COLUMN = "target"
TARGET_SOURCES = ("auto", "harmbench", "column")


def harmbench_targets(data_dir: str | Path | None = None) -> dict[str, str]:
    """HarmBench's optimizer targets by ``BehaviorID``: the data dir's copy, else the pinned remote file."""
    from safereason.data.fetch import _GH, _read_registered
    from safereason.data.sets.harmbench import COMMIT
    from safereason.data.spec import BenchmarkSpec, default_data_dir

    spec = BenchmarkSpec("harmbench-targets", "HarmBench optimizer targets", HARMBENCH_TARGETS_PATH,
                         f"{_GH}/centerforaisafety/HarmBench/{COMMIT}/data/optimizer_targets/"
                         "harmbench_targets_text.json", parse=lambda t: [], sha256=HARMBENCH_TARGETS_SHA256)
    ddir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    data, source, _ = _read_registered(spec, ddir)
    try:
        targets = json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise DataError(f"{source} is not valid JSON: {e}") from None
    if not isinstance(targets, dict) or not all(isinstance(v, str) for v in targets.values()):
        raise DataError(f"{source} must map behaviour ids to target strings")
    return targets


def load_behaviours(benchmark: str, limit: int | None = None, *, target_from: str = "auto",
                    target_column: str = TARGET_COLUMN, data_dir: str | Path | None = None,
                    **columns: str | None) -> list[Behaviour]:
    """The benchmark's first ``limit`` prompts, each with its target string.

    ``target_from``: ``column`` reads the row's ``target_column``; ``harmbench`` looks the id up in HarmBench's
    optimizer targets; ``auto`` takes the column where the rows have it, else HarmBench's targets. A prompt
    without a target is an error naming it (an attack never guesses its target).
    """
    from safereason.data.benchmarks import load_benchmark

    if target_from not in TARGET_SOURCES:
        raise AttackError(f"--target-from must be one of {', '.join(TARGET_SOURCES)}, not {target_from!r}")
    prompts = load_benchmark(benchmark, data_dir=data_dir, limit=limit, **columns).prompts
    source = target_from
    if source == "auto":
        source = "column" if all(target_column in p.meta for p in prompts) else "harmbench"
    if source == "column":
        missing = [p.id for p in prompts if not isinstance(p.meta.get(target_column), str)
                   or not p.meta[target_column].strip()]
        if missing:
            raise DataError(f"{benchmark}: no {target_column!r} column value for {len(missing)} prompt(s) "
                            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); give the targets in "
                            "that column, or use --target-from harmbench for HarmBench behaviour ids")
        return [Behaviour(p, p.meta[target_column]) for p in prompts]
    targets = harmbench_targets(data_dir)
    missing = [p.id for p in prompts if p.id not in targets]
    if missing:
        raise DataError(f"{benchmark}: {len(missing)} prompt id(s) have no HarmBench optimizer target "
                        f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); use HarmBench "
                        f"behaviours, or give a {target_column!r} column and --target-from column")
    return [Behaviour(p, targets[p.id]) for p in prompts]
