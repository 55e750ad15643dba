"""Run configuration: one pydantic model shared by the Python API, ``--config FILE.yaml`` and the CLI."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safereason.errors import ConfigError
from safereason.records import Part

DTYPES = ("auto", "float32", "bfloat16", "float16")

#: Fields that decide which records get generated. A run dir whose records came from different values
#: of these is refused; judges may be added to a finished run.
GENERATION_FIELDS = (
    "model", "backend", "benchmark", "prompt_column", "id_column", "category_column", "label_column",
    "limit", "k", "temperature", "top_p", "top_k", "max_new_tokens", "stop", "ignore_eos", "seed", "batch_size",
    "reasoning_format", "system_prompt", "think_prefill", "enable_thinking", "chat_template", "dtype",
)
#: Also decide the records, but enter the identity only when set away from their defaults, so that run dirs
#: made before these fields existed still resume.
OPTIONAL_GENERATION_FIELDS = (
    "thinking", "prefill", "less_think_text", "think_budget", "think_rounds", "rethink_strings", "backend_options",
    "defense", "defense_options",
)


class EvalConfig(BaseModel):
    """Everything that defines an evaluation run. Defaults follow SafeChain's sampling setup."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to run
    model: str = "smollm2-135m"
    #: SafeChain's settings for a model it evaluated (models/presets.py): None picks one from the hub id,
    #: ORG/NAME names one (e.g. for a local copy), "none" turns presets off; keys set explicitly always win
    preset: str | None = None
    backend: str = "transformers"
    #: backend-specific settings (vllm: tensor_parallel_size, max_model_len, ...; openai: base_url, api_key_env, ...)
    backend_options: dict[str, Any] = Field(default_factory=dict)
    benchmark: str = "smoke"
    data_dir: Path | None = None
    prompt_column: str | None = None
    id_column: str | None = None
    category_column: str | None = None
    label_column: str | None = None
    limit: int | None = Field(default=None, ge=1)

    # sampling
    k: int = Field(default=5, ge=1, le=1024)  # SafeChain's repeat_n 5; odd, so ConsSafe@K has no ties
    temperature: float = Field(default=0.6, ge=0.0, le=10.0, allow_inf_nan=False)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=1)
    #: unset: SafeChain's 16000 with a model preset or thinking=more, else 512
    max_new_tokens: int = Field(default=512, ge=1, le=262144)
    stop: list[str] = Field(default_factory=list)
    ignore_eos: bool = False
    seed: int = 0
    batch_size: int = Field(default=16, ge=1, description="rows (prompt x sample) per generate call")

    # reasoning
    reasoning_format: str = "r1"
    system_prompt: str | None = None
    think_prefill: str | None = None
    enable_thinking: bool | None = None
    chat_template: str | None = None
    #: thinking control: default (as the model likes), zero (ZeroThink), less (LessThink), more (MoreThink)
    thinking: str = "default"
    #: any text appended after the template, think_prefill and thinking control (e.g. "Sure,")
    prefill: str | None = None
    less_think_text: str | None = None  # None: SafeChain's LessThink string with the format's end marker
    think_budget: int = Field(default=10000, ge=1, description="MoreThink: max thinking tokens")
    think_rounds: int = Field(default=10, ge=0, description="MoreThink: max forced rethink rounds")
    rethink_strings: list[str] = Field(default_factory=lambda: ["Wait", "Let me think again"], min_length=1)
    #: MoreThink budgets: safechain (SafeChain's: only generated thinking tokens count against think_budget, the
    #: answer gets max_new_tokens - think_budget) or shared (thinking and answer share max_new_tokens)
    morethink_budget: Literal["safechain", "shared"] = "safechain"
    #: an inference-time defense: safethink, or a baseline (zerothink, lessthink, safepath, adashield)
    defense: str | None = None
    defense_options: dict[str, Any] = Field(default_factory=dict)

    # judging and metrics
    judges: list[str] = Field(default_factory=lambda: ["rs-match"], min_length=1)
    judge_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    parts: list[Part] = Field(default_factory=lambda: ["thinking", "answer", "full"], min_length=1)
    judge_batch_size: int = Field(default=32, ge=1)
    n_bootstrap: int = Field(default=1000, ge=0)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0, allow_inf_nan=False)

    # execution
    device: str = "auto"
    dtype: str = "auto"
    out: Path | None = None
    #: a prompt whose tokens + max_new_tokens exceed the model's context: error (before any generation) or
    #: skip (recorded with status "skipped", left out of the metrics)
    on_long_prompt: Literal["error", "skip"] = "error"

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        """Fill the keys the user left unset from the model's preset, and resolve ``max_new_tokens``."""
        if not isinstance(data, dict):
            return data
        from safereason.models.presets import find_preset

        try:
            preset = find_preset(str(data.get("model", cls.model_fields["model"].default)), data.get("preset"))
        except ConfigError as e:
            raise ValueError(str(e)) from None
        data = dict(data)
        if data.get("max_new_tokens") is None:
            data.pop("max_new_tokens", None)
        for key, value in (preset.settings() if preset else {}).items():
            data.setdefault(key, value)
        if "max_new_tokens" not in data and data.get("thinking") == "more":
            from safereason.reasoning.morethink import SAFECHAIN_MAX_TOKENS

            data["max_new_tokens"] = SAFECHAIN_MAX_TOKENS
        return data

    @field_validator("stop")
    @classmethod
    def _nonempty_stops(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("stop strings must be non-empty")
        return v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", v):
            raise ValueError(f"unknown device {v!r}: use auto, cpu, cuda, cuda:N (or mps, xpu)")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype_name(cls, v: str) -> str:
        return check_dtype(v)

    @field_validator("system_prompt", "think_prefill", "prefill", "less_think_text", "chat_template", "stop",
                     "rethink_strings", "model", "benchmark")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        for s in [v] if isinstance(v, str) else v if isinstance(v, list) else []:
            if isinstance(s, str) and "\x00" in s:
                raise ValueError("contains a NUL byte (\\x00); remove it")
        return v

    @field_validator("thinking")
    @classmethod
    def _thinking_mode(cls, v: str) -> str:
        from safereason.errors import suggest
        from safereason.reasoning.controls import THINKING_MODES

        if v not in THINKING_MODES:
            raise ValueError(f"unknown thinking mode {v!r}.{suggest(v, THINKING_MODES)} "
                             f"Use {', '.join(THINKING_MODES)}")
        return v

    @field_validator("judges", "parts")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        from safereason.judges import JUDGES
        from safereason.reasoning import FORMATS
        from safereason.validation import check_secrets

        # first: a credential must be refused before anything (an error message, a config file) could hold it
        check_secrets({"backend_options": self.backend_options, "judge_options": self.judge_options,
                       "defense_options": self.defense_options})
        FORMATS.get(self.reasoning_format)  # raises with suggestions
        for j in self.judges:
            JUDGES.get(j)
        unknown = set(self.judge_options) - set(self.judges)
        if unknown:
            raise ValueError(f"judge_options for judges not in judges: {sorted(unknown)}")
        if self.defense is not None:
            from safereason.defenses import build_defense

            d = build_defense(self.defense, self.defense_options)  # raises with suggestions / bad options
            if d.thinking is not None and self.thinking not in ("default", d.thinking):
                raise ValueError(f"defense {self.defense} sets thinking={d.thinking}; it cannot run with "
                                 f"thinking={self.thinking}")
            if d.generates and self.thinking == "more":
                raise ValueError(f"defense {self.defense} generates the trace itself; it cannot run with thinking=more")
        elif self.defense_options:
            raise ValueError("defense_options given without a defense")
        if self.thinking != "default" and self.reasoning_format == "none":
            raise ValueError(f"thinking={self.thinking} needs a reasoning format with thinking markers, not none")
        if "thinking" in self.parts and self.reasoning_format == "none":
            self.__dict__["parts"] = [p for p in self.parts if p != "thinking"] or ["full"]
        return self

    @model_validator(mode="after")
    def _morethink_budgets(self) -> EvalConfig:
        """After the other checks (a defense that cannot run MoreThink says so first)."""
        if self.thinking == "more":
            from safereason.reasoning.morethink import check_budgets

            try:
                check_budgets(self.morethink_budget, self.max_new_tokens, self.think_budget)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return self

    # -- identity ----------------------------------------------------------------------------------
    def generation_identity(self) -> dict[str, Any]:
        ident = {f: _jsonable(getattr(self, f)) for f in GENERATION_FIELDS}
        for f in OPTIONAL_GENERATION_FIELDS:
            value = getattr(self, f)
            if f == "backend_options":
                value = identity_backend_options(self.backend, value)
            if value != type(self).model_fields[f].get_default(call_default_factory=True):
                ident[f] = _jsonable(value)
        if self.thinking == "more" and self.morethink_budget != "shared":
            # shared is how MoreThink counted before this key existed: those run dirs keep their identity
            ident["morethink_budget"] = self.morethink_budget
        return ident

    def generation_hash(self) -> str:
        blob = json.dumps(self.generation_identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False, allow_unicode=True)


def transport_options(backend: str) -> tuple[str, ...]:
    """Options of ``backend`` that say how to reach the model, not what it generates."""
    if backend != "openai":
        return ()
    from safereason.models.openai_backend import TRANSPORT_OPTIONS

    return tuple(TRANSPORT_OPTIONS)


def identity_backend_options(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the transport ones: a run resumes after its server moves."""
    skip = transport_options(backend)
    return {k: v for k, v in options.items() if k not in skip}


def normalize_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored run identity in today's form: transport options dropped and the hash recomputed, so run dirs
    made when they were part of the identity still resume."""
    gen = stored.get("generation")
    if not isinstance(gen, dict) or not isinstance(gen.get("backend_options"), dict):
        return stored
    gen = dict(gen)
    opts = identity_backend_options(str(gen.get("backend")), gen["backend_options"])
    if opts == gen["backend_options"]:
        return stored
    if opts:
        gen["backend_options"] = opts
    else:
        del gen["backend_options"]
    blob = json.dumps(gen, sort_keys=True).encode()
    return {**stored, "generation": gen, "generation_hash": hashlib.sha256(blob).hexdigest()[:16]}


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def format_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "invalid config: " + "; ".join(parts)


def make_config(**values: Any) -> EvalConfig:
    """Build a config, turning pydantic's multi-line errors into one ConfigError line."""
    try:
        return EvalConfig(**values)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping (a config file), or one clear ConfigError saying what is wrong with it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def check_dtype(v: str) -> str:
    """A dtype name from :data:`DTYPES` (a pydantic validator body shared by the eval and training configs)."""
    if v not in DTYPES:
        raise ValueError(f"unknown dtype {v!r}: use {', '.join(DTYPES)}")
    return v


#: keys a run dir's config.yaml may predate, with the value its records were made with
LEGACY_RUN_KEYS: dict[str, Any] = {"morethink_budget": "shared"}


def load_config_file(path: str | Path, *, stored: bool = False, **overrides: Any) -> EvalConfig:
    """Read a YAML config (snake_case keys, the same as the CLI flags); ``overrides`` win. ``stored``: a run
    dir's own config.yaml, whose missing keys take :data:`LEGACY_RUN_KEYS` values."""
    data = read_yaml_mapping(path)
    if stored:
        data = {**LEGACY_RUN_KEYS, **data}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(**data)
