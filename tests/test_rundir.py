import json

import pytest

from safereason.errors import RunDirError
from safereason.rundir import JsonlLog, RunDir


def test_torn_last_line_is_cut(tmp_path):
    log = JsonlLog(tmp_path / "x.jsonl")
    log.append([{"a": 1}, {"a": 2}])
    with open(log.path, "ab") as f:
        f.write(b'{"a": 3, "b": "unfinish')
    assert log.read() == [{"a": 1}, {"a": 2}]
    assert log.path.read_bytes().endswith(b'{"a": 2}\n')
    log.append([{"a": 3}])
    assert log.read() == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_torn_line_with_newline_but_invalid_json_at_end(tmp_path):
    log = JsonlLog(tmp_path / "x.jsonl")
    log.append([{"a": 1}])
    with open(log.path, "ab") as f:
        f.write(b'{"a": \n')
    assert log.read() == [{"a": 1}]


def test_corruption_in_the_middle_is_an_error(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\nGARBAGE\n{"a": 2}\n')
    with pytest.raises(RunDirError, match="corrupt"):
        JsonlLog(p).read()
    assert p.read_text() == '{"a": 1}\nGARBAGE\n{"a": 2}\n'  # nothing destroyed


def test_identity_refuses_other_config(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    run.check_identity({"generation_hash": "aaa", "n": 1})
    run.check_identity({"generation_hash": "aaa", "n": 1})
    run.generations.append([{"batch": 0}])  # records exist: the identity is now binding
    with pytest.raises(RunDirError, match="different config.*generation_hash"):
        run.check_identity({"generation_hash": "bbb", "n": 1})
    assert json.loads((run.state / "identity.json").read_text())["generation_hash"] == "aaa"


def test_refuses_foreign_non_empty_dir(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(RunDirError, match="not a safereason run dir"):
        RunDir(tmp_path).create()
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_out_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        RunDir(f).create()
