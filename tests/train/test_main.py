"""``python -m safereason.train[.sft|.grpo|.dpo]`` is ``safereason train ...``, and no training module imports the
command-line layer (only the thin ``__main__`` entry point does)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from safereason.cli import app

TRAIN = Path(__file__).resolve().parents[2] / "src" / "safereason" / "train"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_training_modules_do_not_import_the_cli():
    modules = sorted(p for p in TRAIN.glob("*.py") if p.name != "__main__.py")
    assert {p.stem for p in modules} >= {"sft", "grpo", "dpo", "common", "config", "render"}
    offenders = {p.name: sorted(n for n in _imports(p) if n == "safereason.cli" or n.startswith("safereason.commands"))
                 for p in modules}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert "safereason.cli" in _imports(TRAIN / "__main__.py")  # the entry point is where the CLI is reached


@pytest.mark.parametrize(("module", "args"), [
    ("safereason.train.sft", ["--data", "d.jsonl", "--out", "o", "--lr", "0.001"]),
    ("safereason.train.grpo", ["--prompts", "m.jsonl", "--out", "o", "--beta", "0.01"]),
    ("safereason.train", ["dpo", "--prompts", "m.jsonl", "--out", "o", "--beta", "0.2"]),
])
def test_module_forms_are_the_train_command(module, args, tmp_path, cli_env):
    proc = subprocess.run([sys.executable, "-m", module, *args, "--print-config"], cwd=tmp_path, env=cli_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trainer = [] if module == "safereason.train" else [module.rsplit(".", 1)[1]]
    expected = CliRunner().invoke(app, ["train", *trainer, *args, "--print-config"])
    assert expected.exit_code == 0, expected.output
    assert yaml.safe_load(proc.stdout) == yaml.safe_load(expected.output)


def test_module_form_errors_like_the_cli(tmp_path, cli_env):
    proc = subprocess.run([sys.executable, "-m", "safereason.train.sft", "--data", "d.jsonl", "--out", "o",
                           "--device", "tpu", "--print-config"], cwd=tmp_path, env=cli_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "unknown device 'tpu'" in proc.stderr
