"""TARS's released RL prompt mixes (Kim et al., 2025, "Reasoning as an Adaptive Defense for Safety").

``tars-lambda-0.1`` … ``tars-lambda-0.9``: 2000 prompts each in verl's parquet layout, λ the harmful share. Rows
whose ``ability`` is ``refusal`` are the harmless prompts (TARS tags both its UltraFeedback and its OR-Bench
prompts ``refusal``, so benign and ambiguous cannot be told apart: both are labelled benign); the other rows are
harmful, with their source (``wildjailbreak``, ``rainbow``, ``aegis``) as category. ``tars-test`` is TARS's
test split: StrongREJECT-small's 60 prompts, category from ``ability``. Ids are ``<name>-<row>``; the other
fields (``ability``, ``reward_model``, ``extra_info``, ``data_source``) stay in meta. Note: the λ files hold a
few repeated prompts (λ=0.5: 1997 distinct of 2000); they are kept, as TARS trained on them.
"""

from __future__ import annotations

from collections.abc import Callable

from safereason.data.fetch import _GH
from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import Table, _check, _meta, _require, _text
from safereason.errors import DataError
from safereason.records import Prompt

COMMIT = "32c10be22eabb4ddaadab353756bd5d2d2fb81f2"  # danielkty/tars
LAMBDAS = ("0.1", "0.3", "0.5", "0.7", "0.9")
#: sha256 of each file at COMMIT (data/<file>)
SHA256 = {
    "test.parquet": "39a5e56ca4a6521c929a723a3b6d63b05d7a14afce144a4edaa2bf15d196eb45",
    "train_lambda_0.1.parquet": "70ceb1c9424de7af0f7222ba522b6b206ee94cabcd39848328130c3d12a902e7",
    "train_lambda_0.3.parquet": "c49635aaa6452f326f6f8e30ef9706adeeb065fe70d5c0f7fd6134ff4060e4b5",
    "train_lambda_0.5.parquet": "f81d2030f97d731fd92a444dd039c805f277ea5e19c1c74b3312b6671c3954a6",
    "train_lambda_0.7.parquet": "749e677cb1e8852e1c87b601d222b4b2a4b4386e03525e184279a50fc1820371",
    "train_lambda_0.9.parquet": "02841cc4a33b7191fce801b399dfbec1f13e7697c7e92de247921c18d18d0522",
}
#: the harmless tag (danielkty/tars scripts/data/create_safety_dataset.py @ 32c10be: datatype 'refusal')
BENIGN_ABILITY = "refusal"
HARMFUL_ABILITIES = ("wildjailbreak", "rainbow", "aegis")


def train_parser(prefix: str) -> Callable[[Table], list[Prompt]]:
    """A λ mix: ``ability == 'refusal'`` → benign; wildjailbreak / rainbow / aegis → harmful, category = source."""
    def parse(t: Table) -> list[Prompt]:
        _require(t, "prompt", "ability")
        prompts = []
        for i, r in enumerate(t.rows):
            ability = r["ability"]
            if ability == BENIGN_ABILITY:
                label, category = "benign", None
            elif ability in HARMFUL_ABILITIES:
                label, category = "harmful", ability
            else:
                raise DataError(f"{t.where} {t.at(i)}: ability {ability!r} is none of "
                                f"{', '.join((BENIGN_ABILITY, *HARMFUL_ABILITIES))}")
            prompts.append(Prompt(id=f"{prefix}-{i + 1:04d}", prompt=_text(t, i, "prompt"), label=label,
                                  category=category, meta=_meta(r, "prompt")))
        return _check(prompts, t)

    return parse


def parse_test(t: Table) -> list[Prompt]:
    """TARS's test split (StrongREJECT-small): every prompt harmful, category from ``ability``."""
    _require(t, "prompt", "ability")
    return _check([
        Prompt(id=f"tars-test-{i + 1:04d}", prompt=_text(t, i, "prompt"), label="harmful",
               category=r["ability"] or None, meta=_meta(r, "prompt", "ability"))
        for i, r in enumerate(t.rows)
    ], t)


def _spec(name: str, file: str, description: str, parse: Callable[[Table], list[Prompt]]) -> BenchmarkSpec:
    return BenchmarkSpec(name, description, f"tars/data/{file}", f"{_GH}/danielkty/tars/{COMMIT}/data/{file}",
                         parse, sha256=SHA256[file])


SPECS = (
    *(_spec(f"tars-lambda-{lam}", f"train_lambda_{lam}.parquet",
            f"TARS RL mix, λ={lam}: 2000 prompts, {round(2000 * float(lam))} harmful (WildJailbreak, Rainbow, "
            f"Aegis), the rest benign", train_parser(f"tars-lambda-{lam}"))
      for lam in LAMBDAS),
    _spec("tars-test", "test.parquet", "TARS test split: StrongREJECT-small's 60 prompts", parse_test),
)
