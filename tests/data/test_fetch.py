"""Hub dataset files come through huggingface_hub.hf_hub_download at the pinned revision (its cache, token and
offline mode); the sha256 check and the one-line offline error with the local-path fix still apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from safereason.data import BENCHMARKS, fetch, load_benchmark
from safereason.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAFEREASON_DATA", raising=False)
    monkeypatch.setenv("SAFEREASON_CACHE", str(tmp_path / "cache"))


def _fake_hub(monkeypatch: pytest.MonkeyPatch, answer: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    import huggingface_hub

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def hf_hub_download(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return answer(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


def test_hub_file_parts() -> None:
    assert fetch.hub_file("hf://Org/Set@abc123/data/x.csv") == ("Org/Set", "abc123", "data/x.csv")
    assert fetch.hub_file("https://example.org/a.csv") is None


def test_hub_set_through_hf_hub_download_at_the_pinned_revision(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    spec = BENCHMARKS.get("jbb-harmful")
    local = SHARED_DATA / spec.local_path
    if not local.is_file():
        pytest.skip(f"{local} not found (shared/data beside the repo dir)")
    calls = _fake_hub(monkeypatch, lambda *a, **k: str(local))
    bench = load_benchmark("jbb-harmful")
    assert len(bench.prompts) == 100 and bench.sha256 == spec.sha256
    ((args, kwargs),) = calls
    assert args == ("JailbreakBench/JBB-Behaviors", "data/harmful-behaviors.csv")
    assert kwargs["repo_type"] == "dataset" and kwargs["revision"] == "886acc352a31533ffbcf4ef22c744658688086fc"
    assert "token" not in kwargs  # the hub's own token handling (HF_TOKEN, hf auth login)
    assert bench.source == fetch.remote_url(spec.remote)
    assert not (tmp_path / "cache").exists()  # the hub's cache holds it, not a second copy of ours

    tampered = tmp_path / "tampered.csv"
    tampered.write_bytes(local.read_bytes() + b"Extra,row\n")
    _fake_hub(monkeypatch, lambda *a, **k: str(tampered))
    with pytest.raises(DataError, match="not the pinned 4a8ec683"):
        load_benchmark("jbb-harmful")


def test_hub_offline_is_one_line_error_naming_the_local_copy(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args: Any, **kwargs: Any) -> str:
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic\n"
                                      "has been disabled. To enable hf.co look-ups, set HF_HUB_OFFLINE=0.")

    _fake_hub(monkeypatch, offline)
    with pytest.raises(DataError) as err:
        load_benchmark("jbb-harmful", data_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("could not download jbb-harmful from https://huggingface.co/datasets/")
    assert "LocalEntryNotFoundError" in msg and "offline?" in msg
    assert "--data-dir or SAFEREASON_DATA" in msg and "jailbreakbench/harmful-behaviors.csv" in msg
