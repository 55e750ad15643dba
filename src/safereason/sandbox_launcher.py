"""The sandbox's launcher: run as a script (``python -I -S sandbox_launcher.py``) by :mod:`safereason.sandbox`,
never imported. Standard library only, so that it starts fast and sees nothing of safereason.

It is the throwaway intermediate between the judge and the program. It reads a header line (``key=value`` fields
separated by 0x1f, list items by 0x1e: no JSON, whose import costs milliseconds) and the program from stdin. In
fresh namespaces it makes the whole file tree read-only (after making the Python installation reachable for the
unprivileged user) and mounts private temporary file systems. It then forks the program's process, which drops to
``nobody`` (as root) or enters a new user namespace, limits the number of processes, moves into the empty working
directory and runs the program. Reports go to the result pipe: ``passed <nonce>`` from the program's process when
the program ran to its end, ``failed <nonce> <Exception>: <message>`` when it raised, ``timeout <nonce>`` when its
time limit ended it, ``exit N`` or ``signal N`` from the launcher once the program's process has ended, ``setup
<error>`` when the sandbox could not be made. A program that kills "its parent" reaches this launcher, never the
judge.

The ``human-eval`` style runs the program as openai/human-eval's ``unsafe_execute`` does (human_eval/execution.py
@ 6d43fb980f9fee3c892a914eda09951f772ad10d): ``reliability_guard()``, then ``exec(program, {})`` (so ``__name__``
is ``"builtins"`` and a ``if __name__ == "__main__":`` block never runs) with its I/O swallowed and a
``time_limit(timeout)`` (``ITIMER_REAL``). The ``script`` style runs it as ``__main__``, unguarded, output kept.
"""

import io
import os
import resource
import sys

MS_NOSUID, MS_NODEV, MS_BIND, MS_REC = 2, 4, 4096, 16384
SYS_MOUNT_SETATTR = 442  # one number on every Linux architecture but alpha (new system calls share a table)
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
MS_NOEXEC = 8
CLONE_NEWUSER = 0x10000000


def _libc():  # type: ignore[no-untyped-def]
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _read_only_root() -> None:
    """Every mount read-only, recursively, in this (private) mount namespace: one ``mount_setattr`` call."""
    ctypes, libc = _libc()

    class MountAttr(ctypes.Structure):
        _fields_ = [  # noqa: RUF012  (ctypes' own convention)
            ("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
            ("userns_fd", ctypes.c_uint64),
        ]

    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/", ctypes.c_uint(AT_RECURSIVE),
                      ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(rc, "mount_setattr(/, read-only, recursive)")


def _mount_tmpfs(target: str, size_mb: int) -> None:
    _, libc = _libc()
    options = f"size={size_mb}m,mode=1777".encode()
    _check(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), f"mount tmpfs on {target}")


def _traversable(path: str, uid: int, gid: int) -> bool:
    st = os.stat(path)
    return bool(st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100)
                or (st.st_gid == gid and st.st_mode & 0o010))


def _expose(paths: list[str], uid: int, gid: int) -> None:
    """Make the Python installation reachable for ``uid`` without changing the host: a directory on the way that
    it may not enter (``/root``, mode 0700) is covered, in this mount namespace only, by a tmpfs it may enter,
    into which just the needed entries are bind-mounted back from the original directory."""
    blocked: dict[str, set[str]] = {}
    for path in paths:
        current = "/"
        for name in [part for part in path.split("/") if part]:
            if not _traversable(current, uid, gid):
                blocked.setdefault(current, set()).add(name)
            current = os.path.join(current, name)
    _, libc = _libc()
    for directory in sorted(blocked, key=len):
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
        try:
            _check(libc.mount(b"tmpfs", directory.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755"),
                   f"mount tmpfs on {directory}")
            for name in sorted(blocked[directory]):
                source, target = f"/proc/self/fd/{fd}/{name}", os.path.join(directory, name)
                if os.path.isdir(source):
                    os.mkdir(target)
                else:
                    open(target, "x").close()
                _check(libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None),
                       f"bind {target}")
        finally:
            os.close(fd)


def _private_proc(mode: str) -> None:
    """``/proc`` as the program sees it: ``mount`` a fresh proc of this PID namespace (only the sandbox's own
    processes, no command line from outside), else ``mask`` it with an empty tmpfs; ``host`` leaves it alone."""
    if mode == "host":
        return
    _, libc = _libc()
    if mode == "mount":
        _check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount proc on /proc")
    else:
        _check(libc.mount(b"tmpfs", b"/proc", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k,mode=0555"),
               "mount tmpfs on /proc")


def _prepare(cfg: dict) -> None:
    """In a fresh mount namespace: the Python installation reachable for the unprivileged user, a private
    ``/proc``, the whole tree read-only, then private, size-limited, writable /tmp, /var/tmp and /dev/shm (and the
    working directory, if it lies elsewhere)."""
    if not cfg["namespaces"]:
        return
    user = cfg["user"]
    if user is not None:  # before /proc is replaced: it binds entries through /proc/self/fd
        _expose(sorted({sys.base_prefix, sys.prefix, *(p for p in sys.path if p and os.path.exists(p))}), *user)
    _private_proc(cfg["proc"])
    _read_only_root()
    private = [d for d in cfg["private_dirs"] if os.path.isdir(d)]
    for target in private:
        _mount_tmpfs(target, cfg["tmpfs_mb"])
    workdir = cfg["workdir"]
    if any(workdir.startswith(d.rstrip("/") + "/") for d in private):
        os.makedirs(workdir, mode=0o700, exist_ok=True)
    else:
        _mount_tmpfs(workdir, cfg["tmpfs_mb"])
    if user is not None:
        os.chown(workdir, *user)


def _drop_privileges(cfg: dict) -> None:
    """Become the unprivileged user (root only), whose process count ``RLIMIT_NPROC`` limits (root's is never
    limited); else enter a new user namespace. Either way the program keeps no capability over the mounts (they
    stay read-only, the tmpfs stay in place) nor over anything outside."""
    if cfg["user"] is not None:
        uid, gid = cfg["user"]
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    elif cfg["namespaces"]:
        _, libc = _libc()
        _check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")


def _run_program(cfg: dict, program: bytes, fd: int) -> None:
    """The program's process: drop privileges, limit processes, run the program, report; never returns."""
    nonce = cfg["nonce"]
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        _drop_privileges(cfg)
        nproc = cfg["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        os.chdir(cfg["workdir"])
        human_eval = cfg["style"] == "human-eval"
        if human_eval:
            reliability_guard()
    except BaseException as e:  # the sandbox could not be set up: say so, as a launcher failure
        os.write(fd, f"setup {type(e).__name__}: {e}\n".encode(errors="replace"))
        os._exit(70)
    sys.argv = ["program.py"]
    try:
        _exec(compile(program, "program.py", "exec"), cfg["timeout"], human_eval)
    except TimeoutException:
        os.write(fd, f"timeout {nonce}\n".encode())
        os._exit(1)
    except BaseException as e:
        try:  # the report first: printing the traceback may itself fail (after a MemoryError, say)
            message = str(e).replace("\n", " ")[:300] if not isinstance(e, MemoryError) else ""
        except BaseException:
            message = "(the exception's message could not be read)"
        os.write(fd, f"failed {nonce} {type(e).__name__}: {message}\n".encode(errors="replace"))
        _print_traceback(e, program)
        os._exit(1)
    _flush()
    os.write(fd, f"passed {nonce}\n".encode())
    os._exit(0)


class TimeoutException(Exception):  # human-eval's name
    pass


class WriteOnlyStringIO(io.StringIO):
    """human-eval's: a stream that raises when read from (stdin, stdout and stderr of a swallowed program)."""

    def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError

    def readline(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError

    def readlines(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError

    def readable(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return False


def _exec(code: object, timeout: float, human_eval: bool) -> None:
    """human-eval's ``swallow_io()`` + ``time_limit(timeout)`` + ``exec(check_program, {})``; the ``script`` style
    keeps the output and runs the program as ``__main__``. The time limit applies to both."""
    import signal

    def signal_handler(signum, frame):  # type: ignore[no-untyped-def]
        raise TimeoutException("Timed out!")

    streams = (sys.stdin, sys.stdout, sys.stderr)
    if human_eval:
        stream = WriteOnlyStringIO()
        sys.stdout, sys.stderr, sys.stdin = stream, stream, stream
    signal.setitimer(signal.ITIMER_REAL, timeout)
    signal.signal(signal.SIGALRM, signal_handler)
    try:
        exec(code, {} if human_eval else {"__name__": "__main__", "__builtins__": __builtins__})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdin, sys.stdout, sys.stderr = streams


def reliability_guard() -> None:
    """openai/human-eval's ``reliability_guard()`` (human_eval/execution.py @ 6d43fb98), called as
    ``unsafe_execute`` calls it (no memory limit: the sandbox sets its own). Not a security boundary (a program
    can undo it); it keeps well-meaning code from disturbing the test exactly as the reference harness does."""
    import faulthandler

    faulthandler.disable()

    import builtins

    builtins.exit = None
    builtins.quit = None

    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                 "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                 "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)

    import shutil

    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None

    import subprocess

    subprocess.Popen = None
    builtins.help = None  # human-eval: __builtins__["help"] = None (a dict there, a module in __main__ here)

    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def _print_traceback(e: BaseException, program: bytes) -> None:
    """The traceback from the program's own frame on, with its source lines, to the output (best effort)."""
    try:
        _flush()
        import linecache  # only now: traceback pulls in re, tokenize and linecache
        import traceback

        source = program.decode(errors="replace")
        linecache.cache["program.py"] = (len(source), None, source.splitlines(True), "program.py")
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "program.py":  # the launcher's own frames
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        _flush()
    except BaseException:
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105  (contextlib would be one more import at every start)
            stream.flush()
        except BaseException:
            pass


def _parse_header(line: bytes) -> dict:
    fields = dict(item.split("=", 1) for item in line.decode().split("\x1f"))
    user = fields["user"]
    return {"nonce": fields["nonce"], "result_fd": int(fields["result_fd"]), "namespaces": fields["namespaces"] == "1",
            "user": tuple(int(x) for x in user.split(",")) if user else None,
            "max_processes": int(fields["max_processes"]), "tmpfs_mb": int(fields["tmpfs_mb"]),
            "workdir": fields["workdir"], "style": fields["style"], "timeout": float(fields["timeout"]),
            "proc": fields["proc"], "private_dirs": [d for d in fields["private_dirs"].split("\x1e") if d],
            "site_dirs": [d for d in fields["site_dirs"].split("\x1e") if d]}


def main() -> None:
    data = sys.stdin.buffer.read()
    header, _, program = data.partition(b"\n")
    cfg = _parse_header(header)
    sys.path.extend(d for d in cfg["site_dirs"] if d not in sys.path)  # run with -S: no site, no .pth files
    fd = cfg["result_fd"]
    try:
        _prepare(cfg)
    except Exception as e:
        os.write(fd, f"setup {type(e).__name__}: {e}\n".encode(errors="replace"))
        os._exit(70)
    pid = os.fork()
    if pid == 0:
        _run_program(cfg, program, fd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        os.write(fd, f"signal {os.WTERMSIG(status)}\n".encode())
    else:
        os.write(fd, f"exit {os.WEXITSTATUS(status)}\n".encode())
    os._exit(0)


if __name__ == "__main__":
    main()
