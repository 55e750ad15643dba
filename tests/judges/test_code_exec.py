"""The code-exec judge and its sandbox: programs run as openai/human-eval's ``check_correctness`` runs them
(not as ``__main__``, after ``reliability_guard()``, 3 s), HumanEval's canonical solutions pass, wrong ones fail,
and hostile programs (infinite loop, fork bomb, 10 GB allocation, writes outside the sandbox, a network call,
killing the parent, reading other processes through /proc) each end as a failed item with a reason: never a hang,
a crash of this process, a change outside or a look at the machine's processes. The hostile programs that test
the sandbox itself reach the system through ``posix`` (what the guard does not cover), as hostile code would."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safereason.judges import JudgeItem, build_judge
from safereason.judges.code_exec import build_program, extract_program
from safereason.records import Verdict
from safereason.sandbox import KILL_GRACE_S, Isolation, SandboxLimits, isolation, run_program

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "humaneval").is_dir(), reason="the shared benchmark data dir is not here")
#: A small HumanEval-shaped item for the hostile programs: they replace the body of ``f``.
ITEM_META = {"code_prompt": 'def f(x):\n    """Twice x."""\n',
             "test": "def check(candidate):\n    assert candidate(2) == 4\n", "entry_point": "f"}


def _requires(protection: str) -> pytest.MarkDecorator:
    """Skip (saying why) where this machine does not allow the sandbox protection the test checks."""
    missing = [m for m in isolation().missing if protection in m]
    return pytest.mark.skipif(bool(missing), reason=f"this machine's sandbox lacks {', '.join(missing)}")


def _judge_one(body: str, timeout_s: float = 3.0) -> Verdict:
    judge = build_judge("code-exec", {"timeout_s": timeout_s})
    (verdict,) = judge.judge([JudgeItem(prompt="p", text=body, meta=ITEM_META)])
    return verdict


def _canonical() -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / "humaneval" / "HumanEval.jsonl").read_text().splitlines()]


def _run_canonical(rows: list[dict[str, str]]) -> list[Verdict]:
    judge = build_judge("code-exec", {"workers": 4})
    items = [JudgeItem(prompt=r["prompt"], text=r["canonical_solution"],
                       meta={"code_prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]})
             for r in rows]
    return judge.judge(items)


# -- extraction and the program ------------------------------------------------------------------

def test_extract_program_prefers_the_last_python_block() -> None:
    text = "Plan:\n```\nbare\n```\nFirst try:\n```python\nold\n```\nFinal:\n```python\ndef f(x):\n    return x\n```\n"
    assert extract_program(text) == "def f(x):\n    return x\n"
    assert extract_program("see\n```\nonly bare\n```") == "only bare\n"
    assert extract_program("    return x * 2\n") == "    return x * 2\n"


def test_program_is_built_as_human_eval_does() -> None:
    assert build_program("P", "C", "T", "f") == "PC\nT\ncheck(f)"


# -- executed as human-eval's execution.py executes it (@ 6d43fb980f9fee3c892a914eda09951f772ad10d) ----------

def test_default_timeout_is_human_evals_three_seconds() -> None:
    assert SandboxLimits().timeout_s == 3.0 and KILL_GRACE_S == 1.0  # evaluate_functional_correctness, join(t + 1)
    judge = build_judge("code-exec")
    assert judge.identity()["timeout_s"] == 3.0 and judge.identity()["style"] == "human-eval"
    assert build_judge("code-exec", {"timeout_s": 10}).identity()["timeout_s"] == 10


def test_a_main_block_never_runs() -> None:
    body = ("    return x * 2\n\n\nif __name__ == '__main__':\n    raise SystemExit('the main block ran')\n")
    v = _judge_one(body)
    assert v.correct is True, v.raw  # human-eval: exec(program, {}), so __name__ is "builtins"
    r = run_program("assert __name__ == 'builtins', __name__\n")
    assert r.passed, r.reason
    script = build_judge("code-exec", {"style": "script"})
    (v,) = script.judge([JudgeItem(prompt="p", text=body, meta=ITEM_META)])
    assert v.correct is False and "the main block ran" in (v.raw or "")


@pytest.mark.parametrize("call", ["os.system('true')", "os.kill(os.getpid(), 0)", "os.fork()", "os.unlink('x')",
                                  "os.getcwd()", "shutil.rmtree('x')", "subprocess.Popen(['true'])", "exit(0)",
                                  "help()"])
def test_reliability_guard_disables_what_human_eval_disables(call: str) -> None:
    r = run_program(f"import os, shutil, subprocess\n{call}\n")
    assert r.outcome == "failed" and "TypeError: 'NoneType' object is not callable" in r.reason, r.reason
    assert run_program(f"import os, shutil, subprocess\n{call}\n", style="script").reason != r.reason


def test_guarded_modules_cannot_be_imported_and_io_is_swallowed() -> None:
    r = run_program("import resource\n")
    assert r.outcome == "failed" and "import of resource halted" in r.reason
    printed = run_program("print('visible?')\n")
    assert printed.passed and "visible?" not in printed.output  # human-eval's swallow_io
    assert "visible?" in run_program("print('visible?')\n", style="script").output
    r = run_program("input()\n")  # WriteOnlyStringIO: reading raises
    assert r.outcome == "failed" and "OSError" in r.reason


def test_the_time_limit_is_the_programs_and_the_launcher_dies_a_second_later() -> None:
    r = run_program("while True:\n    pass\n", SandboxLimits(timeout_s=1))
    assert r.outcome == "timeout" and "time limit" in r.reason and r.wall_s < 1 + KILL_GRACE_S
    caught = "import time\nwhile True:\n    try:\n        time.sleep(5)\n    except BaseException:\n        pass\n"
    r = run_program(caught, SandboxLimits(timeout_s=1))  # catches TimeoutException: the wall-clock kill ends it
    assert r.outcome == "timeout" and "wall clock" in r.reason and 1 + KILL_GRACE_S <= r.wall_s < 6


def test_whole_function_and_body_completions_both_pass() -> None:
    assert _judge_one("Here you go:\n```python\ndef f(x):\n    return x * 2\n```").correct is True
    assert _judge_one("    return x + x\n").correct is True
    wrong = _judge_one("```python\ndef f(x):\n    return x + 1\n```")
    assert wrong.correct is False and wrong.label == "failed" and "AssertionError" in (wrong.raw or "")


def test_an_item_without_tests_is_an_error() -> None:
    (v,) = build_judge("code-exec").judge([JudgeItem(prompt="p", text="def f(): pass")])
    assert v.correct is None and v.error is not None and "not a code prompt" in v.error


# -- HumanEval's canonical solutions ---------------------------------------------------------------

@needs_data
def test_twenty_canonical_solutions_pass() -> None:
    rows = _canonical()[::8][:20]
    verdicts = _run_canonical(rows)
    assert [(r["task_id"], v.raw) for r, v in zip(rows, verdicts, strict=True) if v.correct is not True] == []


@needs_data
def test_all_164_canonical_solutions_pass_and_a_wrong_one_fails() -> None:
    rows = _canonical()
    started = time.monotonic()
    verdicts = _run_canonical(rows)
    assert [(r["task_id"], v.raw) for r, v in zip(rows, verdicts, strict=True) if v.correct is not True] == []
    assert time.monotonic() - started < 120
    broken = [{**rows[0], "canonical_solution": "    return not " + rows[0]["canonical_solution"].strip()[7:]}]
    (v,) = _run_canonical(broken)
    assert v.correct is False and v.label == "failed"


# -- hostile programs ----------------------------------------------------------------------------

def test_infinite_loop_times_out() -> None:
    started = time.monotonic()
    v = _judge_one("    while True:\n        pass\n", timeout_s=2)
    assert v.correct is False and v.label == "timeout" and "timeout" in (v.raw or "")
    assert time.monotonic() - started < 10


@_requires("process")
def test_fork_bomb_is_stopped() -> None:
    started = time.monotonic()
    v = _judge_one("    import posix\n    while True:\n        posix.fork()\n", timeout_s=5)
    assert v.correct is False and v.label in ("failed", "timeout", "killed") and v.raw
    assert time.monotonic() - started < 30


def test_ten_gigabyte_allocation_fails_for_memory() -> None:
    v = _judge_one("    block = bytearray(10 * 2**30)\n    return 4\n")
    assert v.correct is False and v.label == "memory" and "MemoryError" in (v.raw or "")


@_requires("read-only")
def test_writes_outside_the_sandbox_change_nothing(tmp_path: Path) -> None:
    targets = [tmp_path / "escaped.txt", Path(__file__).with_name(f"escaped-{secrets.token_hex(4)}.txt")]
    body = "".join(f"    open({str(t)!r}, 'w').write('x')\n" for t in targets) + "    return 4\n"
    try:
        v = _judge_one(body)
        assert v.correct is False and v.label == "failed" and v.raw
        assert not any(t.exists() for t in targets)
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


@_requires("network")
def test_network_calls_fail() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        v = _judge_one(f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                       "    return 4\n")
        assert v.correct is False and v.label == "failed" and "OSError" in (v.raw or "")
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever reached the listener


def test_killing_the_parent_cannot_reach_the_judge() -> None:
    v = _judge_one("    import posix, signal\n    posix.kill(posix.getppid(), signal.SIGKILL)\n    return 4\n")
    assert v.correct is False and v.label in ("failed", "killed") and v.raw
    assert os.getpid() > 0  # still here: the program's parent is the sandbox's launcher


@_requires("pid-namespace")
def test_signalling_the_judge_by_its_pid_fails() -> None:
    v = _judge_one(f"    import posix, signal\n    posix.kill({os.getpid()}, signal.SIGKILL)\n    return 4\n")
    assert v.correct is False and v.label == "failed" and ("ProcessLookupError" in (v.raw or "")
                                                           or "PermissionError" in (v.raw or ""))


#: Lists every process in the program's /proc and reads every command line: only its own may be there.
SNOOP = """
import os
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
lines = []
for pid in pids:
    try:
        lines.append(open(f'/proc/{pid}/cmdline', 'rb').read().decode(errors='replace'))
    except OSError:
        pass
seen = [line for line in lines if MARKER in line]
assert not seen and set(pids) <= {1, os.getpid()}, (len(pids), seen[:1])
"""


@_requires("private-proc")
def test_the_program_sees_only_its_own_processes_and_no_command_line_from_outside() -> None:
    marker = f"secret-on-a-command-line-{secrets.token_hex(8)}"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        program = f"MARKER = {marker!r}\n" + SNOOP
        v = _judge_one("    " + "\n    ".join(program.strip().splitlines()) + "\n    return x * 2\n")
        assert v.correct is True, v.raw
        assert "private" in build_judge("code-exec").identity()["sandbox"]["proc"]
        iso = isolation()  # the same namespaces with the host's /proc: the program sees the secret
        r = run_program(program, iso=Isolation(iso.unshare, iso.user, ("no-private-proc",), "host"))
        assert r.outcome == "failed" and marker in r.reason
    finally:
        holder.kill()
        holder.wait()


def test_killing_the_parent_without_namespaces_kills_only_the_launcher() -> None:
    plain = Isolation((), None, ("no-network-namespace",))
    r = run_program("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(30)\n",
                    SandboxLimits(timeout_s=10), plain, style="script")
    assert r.outcome == "killed" and "SIGKILL" in r.reason and r.wall_s < 10


def test_exiting_early_is_not_a_pass() -> None:
    for body in ("    import sys\n    sys.exit(0)\n", "    import os\n    os._exit(0)\n"):
        v = _judge_one(body + "    return 4\n")
        assert v.correct is False and v.raw


def test_sandbox_identity_and_flags_name_what_is_missing() -> None:
    judge = build_judge("code-exec")
    sandbox = judge.identity()["sandbox"]
    assert sandbox["missing"] == list(isolation().missing)
    v = _judge_one("    return x * 2\n")
    assert v.flags == [f"sandbox:{m}" for m in isolation().missing]


def test_the_working_directory_starts_empty_and_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    made: list[str] = []
    real = tempfile.mkdtemp

    def mkdtemp(*args: object, **kwargs: object) -> str:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    r = run_program("import os\nassert os.listdir('.') == [], os.listdir('.')\nopen('left.txt', 'w').write('x')\n")
    assert r.passed, r.reason
    assert made and not any(Path(d).exists() for d in made)


def test_without_unshare_the_probe_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import safereason.sandbox as sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.isolation.cache_clear()
    try:
        iso = sandbox.isolation()
        assert iso.unshare == () and "no-network-namespace" in iso.missing and "no-read-only-root" in iso.missing
        assert iso.describe()["namespaces"] == "none"
    finally:
        sandbox.isolation.cache_clear()
