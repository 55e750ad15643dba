"""Running untrusted Python (a model's code) in a sandbox: a separate process per program, never the caller's.

Each program runs as ``[unshare --net --pid --fork --kill-child --mount] python -I -S sandbox_launcher.py``:

* in a new **session** (``start_new_session``), its whole process group killed at the wall-clock timeout;
* under **resource limits** set in ``preexec_fn`` (CPU seconds, address space, file size, no core dumps) and a
  limit on processes (``RLIMIT_NPROC``) set in the program's own process, after it has become unprivileged;
* in an **empty temporary working directory**, removed afterwards, with a minimal environment;
* where ``unshare`` works (as root, or through an unprivileged user namespace): in a new **network namespace**
  (no interface but a down loopback: every connection fails), a new **PID namespace** (everything the program
  started dies with it; no process outside can be signalled) and a new **mount namespace** in which the whole
  file tree is read-only but for private, size-limited ``/tmp``, ``/var/tmp`` and ``/dev/shm``, with a fresh
  ``/proc`` of the PID namespace (the program sees its own processes only, no command line from outside; where
  proc cannot be mounted, an empty ``/proc``); the program itself then drops to ``nobody`` or enters a new **user
  namespace**, so it holds no capability to undo any of that.

Programs run as openai/human-eval's ``check_correctness`` runs them (``style="human-eval"``, the default; see
:mod:`safereason.sandbox_launcher`): ``reliability_guard()``, ``exec(program, {})`` (never as ``__main__``),
swallowed I/O, a ``time_limit`` of ``timeout_s`` (3 s, human-eval's default) on the program's run and the whole
launcher killed one second after that (human-eval's ``p.join(timeout=timeout + 1)``).

The program's parent is the launcher (a throwaway intermediate), so a program that kills "its parent" ends
its own run. What this machine allows is probed once (:func:`isolation`); whatever is missing is named in
:attr:`Isolation.missing`, which judges put in their identity and verdict flags, and logged once as a warning.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from safereason.errors import ConfigError

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
#: The namespaces a program gets where ``unshare`` works; ``--kill-child`` ends the program with the launcher.
UNSHARE_ARGS = ("--net", "--pid", "--fork", "--kill-child", "--mount")
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
#: Exit code of a launcher that could not set the sandbox up (EX_SOFTWARE).
SETUP_FAILED = 70
#: How the program runs: as human-eval's ``unsafe_execute`` does, or as a plain ``__main__`` script, unguarded.
Style = Literal["human-eval", "script"]
#: ``/proc`` inside the namespaces, best first: a fresh proc of the PID namespace, an empty one, the host's.
ProcMode = Literal["mount", "mask", "host"]
#: Seconds between the program's time limit and the kill of its launcher: human-eval's ``join(timeout + 1)``.
KILL_GRACE_S = 1.0

Outcome = Literal["passed", "failed", "timeout", "memory", "killed", "error"]


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits. ``timeout_s`` is human-eval's default (``evaluate_functional_correctness(timeout=3.0)``,
    human_eval/evaluation.py @ 6d43fb98): the program's ``time_limit``; its launcher is killed ``KILL_GRACE_S``
    later, and a CPU-time limit of ``int(timeout_s) + 1`` s backs both up."""

    timeout_s: float = 3.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_processes: int = 32
    tmpfs_mb: int = 64

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"sandbox timeout_s must be > 0, got {self.timeout_s!r}")
        for name in ("memory_mb", "file_size_mb", "max_processes", "tmpfs_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"sandbox {name} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class Isolation:
    """What the sandbox can do on this machine (see :func:`isolation`)."""

    unshare: tuple[str, ...] = ()  # the unshare command prefix; () when namespaces are not available
    #: (uid, gid) programs run as when the judge is root (``nobody``), so that ``RLIMIT_NPROC`` applies
    user: tuple[int, int] | None = None
    #: the protections this machine does not allow, e.g. ``no-network-namespace``
    missing: tuple[str, ...] = field(default=())
    #: what the program's ``/proc`` is (namespaces only): see :data:`ProcMode`
    proc: ProcMode = "host"

    def describe(self) -> dict[str, object]:
        """For judge identities: what protects the machine from the programs."""
        mode = "user-namespace" if "-r" in self.unshare else "root"
        proc = {"mount": "private", "mask": "empty"}.get(self.proc, "host") if self.unshare else "host"
        return {"namespaces": f"net,pid,mount ({mode})" if self.unshare else "none",
                "user": "nobody" if self.user else "own", "proc": proc, "missing": list(self.missing)}


@dataclass(frozen=True)
class SandboxResult:
    outcome: Outcome
    reason: str  # one line: "passed", "failed: AssertionError", "timeout after 10 s", ...
    wall_s: float
    output: str = ""  # the tail of the program's stdout and stderr

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


@functools.cache
def isolation() -> Isolation:
    """Probe once what this machine allows: namespaces through ``unshare`` as root, else with ``-r`` (an
    unprivileged user namespace), else none. Each candidate is tried on a real program."""
    exe = shutil.which("unshare")
    nobody = _nobody()
    candidates: list[Isolation] = []
    if exe:
        users = [((exe, *UNSHARE_ARGS), nobody)] if nobody is not None else []
        users += [((exe, *UNSHARE_ARGS), None), ((exe, "-r", *UNSHARE_ARGS), None)]
        candidates = [Isolation(prefix, user, ("no-private-proc",) if proc == "host" else (), proc)
                      for prefix, user in users for proc in ("mount", "mask", "host")]
    why = "unshare not found"
    for iso in candidates:
        result = run_program("import socket, json, hashlib\n", SandboxLimits(timeout_s=30), iso)
        if result.passed:
            if iso.proc == "host":
                log.warning("code sandbox: /proc could not be replaced; programs see the host's processes and "
                            "their command lines")
            if os.geteuid() == 0 and iso.user is None:  # root's processes are never counted against RLIMIT_NPROC
                iso = Isolation(iso.unshare, None, (*iso.missing, "no-process-limit"), iso.proc)
                log.warning("code sandbox: programs run as root in their namespaces, so the process-count limit "
                            "does not apply to them (only the wall and CPU timeouts stop a fork bomb)")
            return iso
        why = result.reason
        log.debug("sandbox: %s failed: %s", iso, result.reason)
    missing = ("no-network-namespace", "no-pid-namespace", "no-read-only-root", "no-private-tmp", "no-private-proc",
               *(("no-process-limit",) if os.geteuid() == 0 else ()))
    log.warning("code sandbox: namespaces unavailable (%s); programs run in a plain subprocess with resource "
                "limits only: %s. See the README", why, ", ".join(missing))
    return Isolation((), None, missing)


def _nobody() -> tuple[int, int] | None:
    """``nobody``'s (uid, gid) when the judge runs as root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
    except (ImportError, KeyError):
        return None
    return entry.pw_uid, entry.pw_gid


def _limits(limits: SandboxLimits) -> Callable[[], None]:
    """The ``preexec_fn``: only ``setrlimit`` calls on precomputed numbers (it runs between fork and exec)."""
    cpu = int(limits.timeout_s) + 1
    memory = limits.memory_mb * 2**20
    fsize = limits.file_size_mb * 2**20
    settings = ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (memory, memory)),
                (resource.RLIMIT_FSIZE, (fsize, fsize)), (resource.RLIMIT_CORE, (0, 0)))

    def preexec() -> None:
        for which, value in settings:
            resource.setrlimit(which, value)

    return preexec


def _env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1"}


def run_program(program: str, limits: SandboxLimits | None = None, iso: Isolation | None = None,
                style: Style = "human-eval") -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox; it passes when it runs to its end without raising."""
    if style not in ("human-eval", "script"):
        raise ConfigError(f"sandbox style must be 'human-eval' or 'script', got {style!r}")
    limits = limits or SandboxLimits()
    iso = iso if iso is not None else isolation()
    workdir = tempfile.mkdtemp(prefix="safereason-sandbox-")
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    try:
        nonce = secrets.token_hex(16)
        header = _header(nonce=nonce, result_fd=write_fd, namespaces="1" if iso.unshare else "0",
                         user=",".join(map(str, iso.user)) if iso.user else "", max_processes=limits.max_processes,
                         tmpfs_mb=limits.tmpfs_mb, workdir=workdir, style=style, timeout=repr(float(limits.timeout_s)),
                         proc=iso.proc, private_dirs=PRIVATE_DIRS, site_dirs=_site_dirs())
        with tempfile.TemporaryFile() as output:
            timed_out, code = _execute(iso, limits, workdir, header + b"\n" + program.encode(errors="replace"),
                                       write_fd, output)
            os.close(write_fd)
            write_fd = -1
            output.seek(0, os.SEEK_END)
            output.seek(max(0, output.tell() - 4000))
            tail = output.read().decode(errors="replace")
        report = _read_report(read_fd)
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - started
    outcome, reason = _classify(report, nonce, timed_out, code, limits)
    return SandboxResult(outcome, reason, wall, tail)


def _header(**fields: object) -> bytes:
    """The launcher's header line: ``key=value`` fields joined by 0x1f, list items by 0x1e."""
    parts = []
    for key, value in fields.items():
        items = [str(v) for v in value] if isinstance(value, tuple | list) else [str(value)]
        if bad := [v for v in items if any(c in v for c in "\x1e\x1f\n")]:
            raise ConfigError(f"sandbox: {key} {bad[0]!r} holds a control character the launcher cannot take")
        parts.append(f"{key}=" + "\x1e".join(items))
    return "\x1f".join(parts).encode()


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    """The judge's site-packages: the launcher runs with ``-S`` (no ``site``: its ``.pth`` processing costs
    ~10 ms a start) and puts these on ``sys.path`` itself, so programs can still import installed packages."""
    import site

    dirs = [*site.getsitepackages(), site.getusersitepackages() if site.ENABLE_USER_SITE else ""]
    return tuple(d for d in dirs if d and os.path.isdir(d))


def _execute(iso: Isolation, limits: SandboxLimits, workdir: str, stdin: bytes, write_fd: int,
             output: object) -> tuple[bool, int]:
    """Start the launcher, feed it, wait for it with the wall timeout; kill its whole process group after.
    Returns (timed out, return code)."""
    proc = subprocess.Popen(
        [*iso.unshare, sys.executable, "-I", "-S", str(LAUNCHER)], stdin=subprocess.PIPE, stdout=output,
        stderr=subprocess.STDOUT, cwd=workdir, env=_env(workdir), pass_fds=(write_fd,), start_new_session=True,
        preexec_fn=_limits(limits),  # setrlimit only, see _limits
    )
    timed_out = False
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        timed_out = not _wait_exit(proc.pid, limits.timeout_s + KILL_GRACE_S)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the leader is not reaped yet: its group id
            os.killpg(proc.pid, signal.SIGKILL)                          # cannot have been reused
        code = proc.wait()
    return timed_out, code


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited without reaping it; False on timeout."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # pragma: no cover - kernels before 5.3
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.002)
        return False
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def _read_report(fd: int) -> list[str]:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:  # a process that escaped still holds the pipe: take what is there
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").splitlines()


def _classify(report: list[str], nonce: str, timed_out: bool, code: int,
              limits: SandboxLimits) -> tuple[Outcome, str]:
    program = next((line for line in report if line.split(" ", 2)[1:2] == [nonce]), None)
    ended = next((line for line in reversed(report) if line.startswith(("exit ", "signal "))), None)
    setup = next((line for line in report if line.startswith("setup ")), None)
    if program is not None and program.startswith("passed "):
        return "passed", "passed"
    if program is not None and program.startswith("timeout "):
        return "timeout", f"timeout: timed out after {limits.timeout_s:g} s (the program's time limit)"
    if timed_out:
        return "timeout", (f"timeout: still running {KILL_GRACE_S:g} s after its {limits.timeout_s:g} s time limit "
                           "(wall clock)")
    if program is not None:  # "failed <nonce> <Type>: <message>"
        detail = program.split(" ", 2)[2].strip().rstrip(":")
        if detail.startswith("MemoryError"):
            return "memory", f"memory: MemoryError (limit {limits.memory_mb} MiB)"
        return "failed", f"failed: {detail}"
    if setup is not None:
        return "error", f"the sandbox could not be set up: {setup.removeprefix('setup ')}"
    if ended is not None and ended.startswith("signal "):
        return _signalled(int(ended.split()[1]), limits)
    if ended is not None:
        return "failed", f"exited with status {ended.split()[1]} before the end of the program"
    if code < 0:  # the launcher itself was killed: by the program, or by a limit
        return _signalled(-code, limits, launcher=True)
    return "killed", f"the sandbox launcher ended (status {code}) without a report"


def _signalled(number: int, limits: SandboxLimits, launcher: bool = False) -> tuple[Outcome, str]:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    who = "the sandbox launcher was" if launcher else "killed by"
    if name == "SIGXCPU":
        return "timeout", f"timeout: CPU time limit ({int(limits.timeout_s) + 1} s), {who} SIGXCPU"
    if name == "SIGXFSZ":
        return "failed", f"file size limit ({limits.file_size_mb} MiB): {who} SIGXFSZ"
    return "killed", f"{who} {name}" if not launcher else f"{who} killed by {name}"

