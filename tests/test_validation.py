"""Everything is checked before the first token: options, device, dtype, numbers, NUL bytes, chat templates; a
failed start leaves a run dir the corrected command can use, and a config mismatch names only what differs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safereason.config import make_config
from safereason.errors import ConfigError, ModelLoadError, RunDirError, SafereasonError
from safereason.rundir import identity_diff
from safereason.runner import evaluate


def _bench(tmp_path: Path, prompts: dict[str, str]) -> str:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in prompts.items()))
    return str(path)


def _cfg(tmp_path, bench, **kw):
    base = dict(model="word", benchmark=bench, id_column="id", k=2, max_new_tokens=8, batch_size=3,
                reasoning_format="none", n_bootstrap=0, out=str(tmp_path / "run"))
    base.update(kw)
    return base


def _never(*a, **k):
    raise AssertionError("nothing may be generated")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_temperature_must_be_finite(value):
    with pytest.raises(ConfigError, match="temperature: Input should be a finite number"):
        make_config(temperature=float(value))


@pytest.mark.parametrize(("kw", "message"), [
    ({"device": "gpu"}, "unknown device 'gpu'"),
    ({"dtype": "fp8"}, "unknown dtype 'fp8'"),
    ({"system_prompt": "be\x00nice"}, "system_prompt: contains a NUL byte"),
    ({"prefill": "Sure\x00"}, "prefill: contains a NUL byte"),
    ({"think_prefill": "<think>\x00"}, "think_prefill: contains a NUL byte"),
    ({"stop": ["\x00"]}, "stop: contains a NUL byte"),
])
def test_bad_values_are_one_clear_error(kw, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**kw)


@pytest.mark.parametrize(("opts", "message"), [
    ({"max_steps": "abc"}, "option max_steps must be an integer, got 'abc'"),
    ({"threshold": "high"}, "option threshold must be a number, got 'high'"),
    ({"attempts": True}, "option attempts must be an integer"),
    ({"m": "abc"}, "bad options for defense 'safethink': no option 'm'.*max_steps"),
    ({"scorer_options": {"nope": 1}}, None),  # the scorer's own options are checked by preflight_judges
])
def test_defense_options_are_checked(opts, message):
    if message is None:
        make_config(defense="safethink", defense_options=opts)
        return
    with pytest.raises(ConfigError, match=message):
        make_config(defense="safethink", defense_options=opts)


def test_nul_byte_in_a_benchmark_prompt(word_backend, tmp_path):
    bench = _bench(tmp_path, {"a": "hello", "b": "bad\x00prompt"})
    backend = word_backend()
    backend.generate = _never
    with pytest.raises(SafereasonError, match=r"'b'.*NUL byte"):  # the loader or the runner: before any writing
        evaluate(_cfg(tmp_path, bench), backend=backend, progress=False)
    assert not (tmp_path / "run").exists()


def test_bad_judge_option_fails_before_generation(word_backend, tmp_path):
    bench = _bench(tmp_path, {"a": "hello"})
    backend = word_backend()
    backend.generate = _never
    with pytest.raises(ConfigError, match="bad options for judge 'rs-match'"):
        evaluate(_cfg(tmp_path, bench, judge_options={"rs-match": {"colour": "blue"}}), backend=backend,
                 progress=False)
    with pytest.raises(ConfigError, match="bad options for judge 'rs-match'"):
        evaluate(_cfg(tmp_path, bench, defense="safethink", defense_options={"scorer_options": {"nope": 1}}),
                 backend=backend, progress=False)
    assert not (tmp_path / "run").exists()


def test_missing_judge_api_key_fails_before_generation(word_backend, tmp_path, monkeypatch):
    monkeypatch.delenv("SAFEREASON_TEST_NO_KEY", raising=False)
    bench = _bench(tmp_path, {"a": "hello"})
    backend = word_backend()
    backend.generate = _never
    opts = {"openai-moderation": {"api_key_env": "SAFEREASON_TEST_NO_KEY", "base_url": "https://api.example.com/v1"}}
    with pytest.raises(ConfigError, match="SAFEREASON_TEST_NO_KEY is not set"):
        evaluate(_cfg(tmp_path, bench, judges=["openai-moderation"], judge_options=opts), backend=backend,
                 progress=False)


def _drops_user(word_backend):
    class DropsUser(word_backend):
        def render_prompt(self, prompt, *, system_prompt=None, prefill="", template_kwargs=None):
            return "[system] You are helpful.\n[assistant] " + prefill

    return DropsUser()


def test_template_that_drops_the_user_message_is_refused(word_backend, tmp_path):
    bench = _bench(tmp_path, {"a": "hello", "b": "bye"})
    backend = _drops_user(word_backend)
    backend.generate = _never
    with pytest.raises(ConfigError, match="dropped the user message"):
        evaluate(_cfg(tmp_path, bench), backend=backend, progress=False)
    assert not (tmp_path / "run" / "state" / "identity.json").exists()


def test_real_template_ignoring_messages(tiny_model_dir, tmp_path):
    from safereason.models.transformers_backend import TransformersBackend

    template = "<|im_start|>assistant\n"  # ignores the messages
    backend = TransformersBackend(str(tiny_model_dir), device="cpu", chat_template=template)
    backend.generate = _never
    bench = _bench(tmp_path, {"a": "hello"})
    with pytest.raises(ConfigError, match="dropped the user message"):
        evaluate(_cfg(tmp_path, bench, model=str(tiny_model_dir), reasoning_format="r1", chat_template=template),
                 backend=backend, progress=False)


def test_cuda_on_a_cpu_build_is_a_clear_error(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    bench = _bench(tmp_path, {"a": "hello"})
    with pytest.raises(ModelLoadError, match="device 'cuda' asked for, but torch .* CPU-only build; use --device cpu"):
        evaluate(_cfg(tmp_path, bench, model=str(tiny_model_dir), reasoning_format="r1", device="cuda"),
                 progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_failed_start_does_not_lock_the_run_dir_to_its_settings(word_backend, tmp_path):
    bench = _bench(tmp_path, {"a": "hello", "b": "bye"})
    backend = _drops_user(word_backend)
    with pytest.raises(ConfigError):
        evaluate(_cfg(tmp_path, bench, dtype="float16"), backend=backend, progress=False)
    # the corrected command (other settings, working template) runs in the same dir
    res = evaluate(_cfg(tmp_path, bench, dtype="float32"), backend=word_backend(), progress=False)
    assert len(res.samples) == 4


def test_identity_written_by_an_older_failed_start_is_replaced(word_backend, tmp_path):
    """An old run dir whose start failed before the first token (identity written, no records) resumes."""
    bench = _bench(tmp_path, {"a": "hello"})
    state = tmp_path / "run" / "state"
    state.mkdir(parents=True)
    (state / "identity.json").write_text(json.dumps({"generation_hash": "x", "generation": {"dtype": "float61"}}))
    res = evaluate(_cfg(tmp_path, bench), backend=word_backend(), progress=False)
    assert len(res.samples) == 2
    assert json.loads((state / "identity.json").read_text())["generation"]["dtype"] == "auto"


def test_config_mismatch_names_only_the_differing_keys(word_backend, tmp_path):
    bench = _bench(tmp_path, {"a": "hello"})
    evaluate(_cfg(tmp_path, bench, temperature=0.6), backend=word_backend(), progress=False)
    with pytest.raises(RunDirError) as e:
        evaluate(_cfg(tmp_path, bench, temperature=0.7), backend=word_backend(), progress=False)
    msg = str(e.value)
    assert "generation.temperature: 0.6 -> 0.7" in msg
    assert "generation_hash" not in msg and "max_new_tokens" not in msg and "top_p" not in msg


def test_identity_diff_is_nested():
    old = {"generation_hash": "a", "generation": {"k": 2, "stop": [], "x": {"y": 1}}, "n_prompts": 3}
    new = {"generation_hash": "b", "generation": {"k": 2, "stop": ["a"], "x": {"y": 2}}, "n_prompts": 3}
    assert identity_diff(old, new) == ['generation.stop: [] -> ["a"]', "generation.x.y: 1 -> 2"]
    assert identity_diff(old, old) == []


def test_cli_prints_one_line_and_exits_2(tmp_path, cli_env):
    repo = Path(__file__).resolve().parents[1]
    cases = [
        (["--temperature", "nan"], "temperature: Input should be a finite number"),
        (["--defense", "safethink", "--defense-opt", "max_steps=abc"], "option max_steps must be an integer"),
        (["--device", "cuda:x"], "unknown device 'cuda:x'"),
        (["--on-long-prompt", "truncate"], "on_long_prompt"),
    ]
    config = tmp_path / "nul.yaml"
    config.write_text('system_prompt: "be\\0nice"\n')  # argv cannot carry a NUL byte; a config file can
    cases.append((["--config", str(config)], "system_prompt: contains a NUL byte"))
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-m", "safereason.cli", "eval", "--out", str(tmp_path / "r"), *args],
                              capture_output=True, text=True, env=cli_env, cwd=repo, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "r").exists()


def test_template_check_on_system_prompts():
    from safereason.validation import PROBE, check_template_keeps_messages

    sp = 'Be "careful".\nThink first.'
    check_template_keeps_messages(f"<s>{sp}</s><u>{PROBE}</u>", sentinel=PROBE, system_prompt=sp, model="m")
    # a remote backend's rendering holds the messages as JSON
    check_template_keeps_messages(json.dumps([{"content": sp}, {"content": PROBE}]), sentinel=PROBE,
                                  system_prompt=sp, model="m")
    with pytest.raises(ConfigError, match="dropped the system prompt"):
        check_template_keeps_messages(f"<u>{PROBE}</u>", sentinel=PROBE, system_prompt=sp, model="m")


def test_unknown_backend_option_fails_before_anything_is_written(tiny_model_dir, tmp_path):
    bench = _bench(tmp_path, {"a": "hello"})
    with pytest.raises(ConfigError, match="bad backend_options for backend 'transformers'.*colour"):
        evaluate(_cfg(tmp_path, bench, model=str(tiny_model_dir), reasoning_format="r1",
                      backend_options={"colour": "blue"}), progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert not (tmp_path / "run" / "state" / "identity.json").exists()
