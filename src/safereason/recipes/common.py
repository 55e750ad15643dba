"""What the recipe and card configs share: the identity and YAML of a config, building one with a one-line
error, loading one from YAML with flags on top, and writing a file only when its text changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from safereason.config import format_validation_error, read_yaml_mapping
from safereason.errors import ConfigError, SafereasonError


def none_if_blank(v: Any) -> Any:
    """A ``mode="before"`` validator: "", "none" and "null" (any case, spaces around) mean None."""
    return None if isinstance(v, str) and v.strip().lower() in ("", "none", "null") else v


def check_device(v: str) -> str:
    """A ``device`` validator: auto, cpu or cuda."""
    if v not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {v!r}: use auto, cpu or cuda")
    return v


class RecipeConfigBase(BaseModel):
    """A run's config: :meth:`identity` ties a run dir to it, :meth:`to_yaml` is what ``--print-config`` shows."""

    model_config = ConfigDict(extra="forbid")

    #: the word in "invalid ... config" errors
    config_label: ClassVar[str] = "recipe"
    #: keys that say where the run happens or reads from, not what it computes: they may change between re-runs
    non_identity_keys: ClassVar[tuple[str, ...]] = ()

    def identity(self) -> dict[str, Any]:
        """The keys that decide every stage's results (a re-run into the same dir must have the same)."""
        return {k: v for k, v in json.loads(self.model_dump_json()).items() if k not in self.non_identity_keys}

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False, allow_unicode=True)


C = TypeVar("C", bound=RecipeConfigBase)


def make_config(cls: type[C], /, **values: Any) -> C:
    """Build a config, turning pydantic's multi-line errors into one ConfigError line."""
    try:
        return cls(**values)
    except ValidationError as e:
        message = format_validation_error(e).replace("invalid config", f"invalid {cls.config_label} config")
        raise ConfigError(message) from None


def load_config(cls: type[C], path: str | Path | None, /, **overrides: Any) -> C:
    """A YAML config (the same keys as the flags) with ``overrides`` (flags, None = unset) on top."""
    data: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(cls, **data)


def write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, unless the file already holds exactly that text."""
    from safereason.rundir import atomic_write_text

    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as e:
        raise SafereasonError(f"cannot write {path}: {e.strerror}") from None
    return path
