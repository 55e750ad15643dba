"""Credentials in options are refused before anything is written (no secret in any file of a failed run), and
transport options (where the server is, timeouts, key variable names) are not part of a run's identity."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from safereason.config import make_config, normalize_identity
from safereason.errors import ConfigError
from safereason.runner import evaluate

SECRET = "sk-test9f8e7d6c5b4a39281706"
PASSWORD = "hunter2-c0rrect-h0rse"


def _bench(tmp_path: Path) -> str:
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "hello"}) + "\n" + json.dumps({"id": "b", "prompt": "bye"}) + "\n")
    return str(path)


def _cfg(tmp_path, **kw):
    base = dict(model="served-model", backend="openai", benchmark=_bench(tmp_path), id_column="id", k=2,
                max_new_tokens=8, reasoning_format="none", n_bootstrap=0, out=str(tmp_path / "run"))
    base.update(kw)
    return base


def _files_holding(root: Path, needle: str) -> list[Path]:
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.parametrize(("kw", "message"), [
    ({"backend_options": {"api_key": SECRET}}, "backend_options.api_key is a credential"),
    ({"backend_options": {"base_url": f"http://user:{PASSWORD}@127.0.0.1:9/v1"}}, "URL with credentials"),
    ({"backend_options": {"extra_body": {"headers": {"Authorization": f"Bearer {SECRET}"}}}},
     "extra_body.headers.Authorization"),
    ({"backend_options": {"api_key_env": SECRET}}, "must be the NAME of an environment variable"),
    ({"judges": ["openai-moderation"], "judge_options": {"openai-moderation": {"api_key": SECRET}}},
     "judge_options.openai-moderation.api_key is a credential"),
    ({"defense": "safethink", "defense_options": {"scorer": "openai-moderation",
                                                  "scorer_options": {"token": SECRET}}},
     "defense_options.scorer_options.token is a credential"),
])
def test_secret_in_options_is_refused_before_anything_is_written(tmp_path, word_backend, kw, message):
    backend = word_backend()
    with pytest.raises(ConfigError, match=message) as e:
        evaluate(_cfg(tmp_path, **kw), backend=backend, progress=False)
    assert SECRET not in str(e.value) and PASSWORD not in str(e.value)
    assert "environment variable" in str(e.value)
    assert backend.generated == []
    assert not (tmp_path / "run").exists()


def test_cli_secret_never_reaches_disk_or_the_message(tmp_path, cli_env):
    repo = Path(__file__).resolve().parents[1]
    bench = _bench(tmp_path)
    for opts in ([f"--backend-opt=api_key={SECRET}"], [f"--backend-opt=base_url=http://u:{PASSWORD}@127.0.0.1:9/v1"],
                 ["--judge", "openai-moderation", f"--judge-opt=openai-moderation.api_key={SECRET}"]):
        out = tmp_path / "run"
        proc = subprocess.run(
            [sys.executable, "-m", "safereason.cli", "eval", "--backend", "openai", "--model", "m", "--benchmark",
             bench, "--id-column", "id", "--out", str(out), "--no-progress", *opts],
            capture_output=True, text=True, env=cli_env, cwd=repo, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "environment variable" in proc.stderr and "Traceback" not in proc.stderr
        assert SECRET not in proc.stderr + proc.stdout and PASSWORD not in proc.stderr + proc.stdout
        assert _files_holding(tmp_path, SECRET) == [] and _files_holding(tmp_path, PASSWORD) == []
        assert not out.exists()


def test_plain_options_are_not_secrets():
    cfg = make_config(backend="openai", backend_options={"base_url": "https://api.example.com/v1",
                                                         "api_key_env": "MY_KEY", "max_tokens": 5, "tokenizer": "x"})
    assert cfg.backend_options["api_key_env"] == "MY_KEY"


def test_transport_options_are_not_identity():
    a = make_config(backend="openai", backend_options={"base_url": "http://a:8000/v1", "timeout": 60, "mode": "chat"})
    b = make_config(backend="openai", backend_options={"base_url": "http://b:9000/v1", "timeout": 30,
                                                       "max_retries": 9, "api_key_env": "OTHER", "mode": "chat"})
    assert a.generation_identity() == b.generation_identity()
    assert a.generation_identity()["backend_options"] == {"mode": "chat"}
    c = make_config(backend="openai", backend_options={"base_url": "http://a:8000/v1", "mode": "completions",
                                                       "tokenizer": "x"})
    assert c.generation_hash() != a.generation_hash()  # what is generated still counts


def test_run_resumes_after_the_server_moves(tmp_path, word_backend):
    backend = word_backend()
    first = evaluate(_cfg(tmp_path, backend_options={"base_url": "http://127.0.0.1:8000/v1"}), backend=backend,
                     progress=False)
    assert len(backend.generated) == 4
    again = evaluate(_cfg(tmp_path, backend_options={"base_url": "http://10.0.0.7:9000/v1", "timeout": 5}),
                     backend=backend, progress=False)
    assert len(backend.generated) == 4  # nothing regenerated
    assert [s.response for s in again.samples] == [s.response for s in first.samples]


def test_old_run_dir_with_transport_in_its_identity_still_resumes(tmp_path, word_backend):
    backend = word_backend()
    cfg = _cfg(tmp_path, backend_options={"base_url": "http://127.0.0.1:8000/v1", "mode": "chat"})
    evaluate(cfg, backend=backend, progress=False)
    # rewrite the identity as older versions stored it: transport options inside, hash over them
    path = tmp_path / "run" / "state" / "identity.json"
    ident = json.loads(path.read_text())
    ident["generation"]["backend_options"] = {"base_url": "http://127.0.0.1:8000/v1", "mode": "chat"}
    ident["generation_hash"] = hashlib.sha256(json.dumps(ident["generation"], sort_keys=True).encode()).hexdigest()[:16]
    path.write_text(json.dumps(ident))
    assert normalize_identity(ident)["generation"]["backend_options"] == {"mode": "chat"}
    evaluate(_cfg(tmp_path, backend_options={"base_url": "http://elsewhere:1/v1", "mode": "chat"}), backend=backend,
             progress=False)
    assert len(backend.generated) == 4


SHORT_KEY = "sk-test-SECRET123"


@pytest.mark.parametrize("options", [
    {"rs-match": {"extra_phrases": [SHORT_KEY]}},
    {"rs-match": {"extra_phrases": ["I cannot help", {"nested": [SHORT_KEY]}]}},
    {"rs-match": {"extra_phrases": SHORT_KEY}},
])
def test_a_short_key_is_refused_in_lists_and_mappings_too(options):
    with pytest.raises(ConfigError, match="looks like an API key") as e:
        make_config(judges=["rs-match"], judge_options=options)
    assert SHORT_KEY not in str(e.value)
    make_config(judges=["rs-match"], judge_options={"rs-match": {"extra_phrases": ["sk-etch", "ask-me-later 2"]}})


def test_cli_short_key_in_a_list_option_never_reaches_disk(tmp_path, cli_env):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "safereason.cli", "eval", "--backend", "openai", "--model", "m", "--benchmark",
         _bench(tmp_path), "--id-column", "id", "--out", str(out), "--no-progress", "--judge", "rs-match",
         f"--judge-opt=rs-match.extra_phrases=[{SHORT_KEY}]"],
        capture_output=True, text=True, env=cli_env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error:"), proc.stderr
    assert "rs-match.extra_phrases[0] holds what looks like an API key" in proc.stderr
    assert SHORT_KEY not in proc.stderr + proc.stdout and _files_holding(tmp_path, SHORT_KEY) == []
    assert not out.exists()
