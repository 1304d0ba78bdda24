"""Server mode of the executor: one long-lived sandbox process that serves many runs.

`python3 -I -B -c SOURCE serve SOCKET CONFIG_JSON`, SOURCE being executor.py followed by this file
(`sandbox.bwrap._executor_source` drops this file's `from __future__` line, which may only open a
file, and the imports below are skipped there since executor.py already defined the names). The
server connects to the runtime's unix socket, sends a hello frame, then serves one request at a
time. Frames are a 4-byte big-endian length + JSON. CONFIG is `{"limits": {...}, "preload":
[module, ...], "reuse": bool, "refresh": N}`; heavy libraries are imported once, before any
request. Both pools (the Docker and the bubblewrap backend) run this.

Fresh mode (`reuse` false, the default): every request runs in a FRESH forked child (rlimits,
then replay + run), so no interpreter state survives a run; after it the server kills every
process left in the sandbox and empties /tmp. Pre-fork: the server keeps ONE spare child already
forked (from the preloaded, frozen server image) that has dropped its fds, reset its signals and
set its rlimits, and now blocks on its request pipe; a request is handed to it as raw bytes (the
child parses it), and the next spare is forked right after the reply is sent, so the fork (3-9 ms
with sympy loaded) is off the critical path. The spare is forked only after the cleanup, when no
user process is alive, so it never coexists with user code. The server itself runs no user code.

Reuse mode (`reuse` true): the server forks ONCE into a supervisor (the parent) and a worker; the
worker runs request after request IN ITS OWN PROCESS, each in a fresh namespace with the history
replayed exactly as in fresh mode, and between runs puts back what user code could have changed
(`_Baseline.restore`): sys.modules to the post-preload snapshot (new imports dropped), the
builtins, the `sys` attributes (stdio, hooks, path lists, recursion limit...), this program's own
globals, os.environ, the cwd, the umask, fds 0-2, signal handlers, the signal mask and interval
timers, and the library state math code sets in passing (`_Baseline._module_state`: the global
generators of `random` and numpy, decimal's context, numpy's print and error options, mpmath's
precision, sympy's evaluation flags and printer settings, the int-to-str digit limit); it runs
the garbage collector (so finalizers of one run's objects cannot fire inside the next run),
kills leftover processes and empties /tmp (cheap probes, `_Probes`, tell when a process or a
/tmp entry can exist at all, so /proc and /tmp are listed only then). (The executor's cache
of compiled snippets, `_cached_plan`, survives runs on purpose: searches replay the same
ancestors again and again, and a plan holds only immutable code objects and strings.) What
it cannot reset cheaply and reliably makes the reply "dirty" and the worker exits after replying,
so the runtime replaces the sandbox: a thread still alive, a process left behind, a leaked fd, a
failed /tmp cleanup, a MemoryError or RecursionError anywhere in the run (the heap or an
extension may be half-updated), an audit hook added, any use of ctypes (raw memory access) or a
killed supervisor. The supervisor runs no user code: it waits for the worker and, should it die
by a signal (a crash, RLIMIT_CPU, the OOM killer), reports `{"signal", "cpu_s"}` on the shared
socket, as fresh mode does for a child. After `refresh` clean runs (`SandboxLimits.worker_runs`),
or when its CPU budget runs low (below), or after a run that lowered an rlimit (soft = hard: it
cannot be raised again, and later runs would inherit it), the worker replies as usual and
exits with `_REFRESH_EXIT`; the supervisor then forks a fresh worker from its own untouched,
preloaded image, which takes over the connection (no second hello) — a fork, ~15 ms on the next
run, instead of a new sandbox that imports sympy and numpy again (~1 CPU-s).

What reuse mode does NOT isolate — why a worker lives only `refresh` runs:
- attributes of modules that were already loaded (sympy, numpy, math, os, ...) and of their
  classes: `sympy.pi = 3` or `sympy.Symbol.foo = f` persists into later runs on that worker, and
  caches inside them (sympy's cache) fill up across runs (that one only changes speed);
- other C-level state behind those modules (os.putenv, locale, numpy's error callback);
- code that deliberately reaches into the server (frames of its callers, gc, the socket fd)
  can forge its own observation, disable the checks above or corrupt later runs on that worker.
  Every run's request carries a random id the reply must echo; a frame with another id (one
  written by an earlier run) makes the runtime retire the worker and rerun the request elsewhere.
The process boundary to the host (container or bwrap namespaces, rlimits, cgroup) is the same as
in fresh mode; only the isolation of runs FROM EACH OTHER on one worker is weaker. Still, it is
stronger than AlphaMath's own tool, which ran every step of every tree in one reused globals dict
per worker process and reset nothing.

RLIMIT_CPU in reuse mode: the worker's CPU time is cumulative and an unprivileged process can
lower a hard limit but never raise it again, so a per-run limit cannot be re-armed. The worker
sets a lifetime limit of twice `cpu_s` (soft = hard) and hands over to a fresh worker (with a
fresh budget) once less than `cpu_s` is left, so every run starts with at least `cpu_s` CPU
seconds before SIGXCPU/SIGKILL, and at most 2 × `cpu_s`. The runtime's wall-clock timeout
(AlphaMath's 15 s) fires first for ordinary code.

Replies: {"stdout", "error"} an ordinary run, {"signal": N, "cpu_s": T} the child (fresh) or
worker (reuse) died by N, {"overflow": true} the reply flooded the cap, {"fatal": msg} setup of
the child failed; plus "dirty": true (replace this sandbox) and, in reuse mode, the request's
"id".
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

if __name__ != "__main__":  # imported on the host (tests); in the sandbox executor.py precedes us
    from sandbox.executor import _apply_limits, cap_text, execute, format_error

_FRAME = 4
_IGNORED_IN_SERVER = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def _send_frame(sock: Any, payload: dict[str, Any]) -> None:
    data = json.dumps(payload, ensure_ascii=True).encode("ascii")
    sock.sendall(len(data).to_bytes(_FRAME, "big") + data)


def _recv_exact(sock: Any, size: int) -> bytes:
    view = bytearray()
    while len(view) < size:
        chunk = sock.recv(min(size - len(view), 1 << 20))
        if not chunk:
            raise EOFError
        view += chunk
    return bytes(view)


def _recv_frame(sock: Any) -> bytes:
    """One frame's raw JSON; exits the process when the runtime closed the socket."""
    try:
        size = int.from_bytes(_recv_exact(sock, _FRAME), "big")
        return _recv_exact(sock, size)
    except EOFError:
        os._exit(0)


def _field_limit(limits: dict[str, Any]) -> int:
    # ensure_ascii=True: at most 12 bytes per char, two fields.
    return max(int(limits.get("max_output_bytes", 1_000_000)) // 32, 256)


def _fatal(exc: BaseException) -> dict[str, Any]:
    return {"stdout": "", "error": None, "fatal": f"sandbox setup failed: {format_error(exc)}"}


def _other_pids(keep: tuple[int, ...]) -> list[int]:
    """Every process in the sandbox (its own pid namespace) but init and `keep`."""
    return [pid for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()) if pid != 1 and pid not in keep]


def _in_own_pid_namespace() -> bool:
    """True when this process sees a sandbox's pid namespace (only init and a handful of
    processes), not a host's. `_kill_leftovers` kills EVERY other process it sees, so the server
    refuses to start anywhere else (a launcher without a pid namespace, a stray test harness)."""
    return len(_other_pids((os.getpid(), os.getppid()))) <= 2


def _kill_leftovers(keep: tuple[int, ...]) -> bool:
    """SIGKILL every process in the sandbox but init and `keep`; True when none is left.
    Only ever called by a server that passed `_in_own_pid_namespace`."""
    import signal
    import time

    for _ in range(50):
        pids = _other_pids(keep)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        # Reap the ones that are our children (init reaps the rest).
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        time.sleep(0.001)
    return False


def _empty_dir(path: str) -> bool:
    """Remove everything under `path` (user code may have chmod-ed things); True when empty."""
    import shutil
    import stat

    def fix(func: Any, target: str, _exc: Any) -> None:
        parent = os.path.dirname(target)
        for each in (parent, target):
            try:
                os.chmod(each, stat.S_IRWXU)
            except OSError:
                pass
        try:
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.unlink(target)
        except OSError:
            pass

    try:
        names = os.listdir(path)
    except OSError:
        return True
    for name in names:
        target = os.path.join(path, name)
        try:
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, onerror=fix)
            else:
                os.unlink(target)
        except OSError:
            fix(None, target, None)
    try:
        return not os.listdir(path)
    except OSError:
        return False


# --- fresh mode: a pre-forked child per run ----------------------------------------------------


def _child_setup(keep: tuple[int, ...]) -> None:
    """In a forked child: own session, default signals, fds 0-2 on /dev/null, every fd but
    `keep` closed."""
    import signal

    os.setsid()
    for name in _IGNORED_IN_SERVER:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except BaseException:
        pass


def _child_run(request: Any, limits: dict[str, Any], reply_w: int) -> None:
    """In the forked child, limits already set: replay + run `request`, reply, _exit."""
    try:
        field_limit = _field_limit(limits)
        history = [str(snippet) for snippet in request.get("history", [])]
        code = str(request["code"])
    except BaseException as exc:
        reply = _fatal(exc)
    else:
        main_pid = os.getpid()
        stdout, error = execute(history, code)
        if os.getpid() != main_pid:
            os._exit(0)  # a process forked by user code: never reply from it
        reply = {"stdout": cap_text(stdout, field_limit), "error": cap_text(error, field_limit)}
    _write_all(reply_w, (json.dumps(reply, ensure_ascii=True) + "\n").encode("ascii"))
    os._exit(0)


def _fatal_reply(exc: BaseException, reply_w: int) -> None:
    _write_all(reply_w, (json.dumps(_fatal(exc)) + "\n").encode("ascii"))
    os._exit(0)


def _spare_child(request_r: int, limits: dict[str, Any], reply_w: int) -> None:
    """The pre-forked child: set up and set rlimits NOW, then block until the request arrives
    (raw JSON, up to EOF), then run it. Exits silently when the server goes away first."""
    try:
        _child_setup((request_r, reply_w))
        _apply_limits(limits)
    except BaseException as exc:
        _fatal_reply(exc, reply_w)
    try:
        chunks = []
        while True:
            chunk = os.read(request_r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(request_r)
        if not chunks:
            os._exit(0)  # the server exited (or replaced us) without a request
        request = json.loads(b"".join(chunks))
        if not isinstance(request, dict):
            raise ValueError("the request is not an object")
    except BaseException as exc:
        _fatal_reply(exc, reply_w)
    _child_run(request, limits, reply_w)


def _fork_spare(limits: dict[str, Any]) -> tuple[int, int, int]:
    """Fork the next child ahead of its request: (pid, request write end, reply read end)."""
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(request_w)
        os.close(reply_r)
        _spare_child(request_r, limits, reply_w)
        os._exit(0)  # not reached
    os.close(request_r)
    os.close(reply_w)
    return pid, request_w, reply_r


def _discard_spare(spare: tuple[int, int, int]) -> None:
    """Kill and reap a spare whose request pipe is already closed (by `_hand_off`)."""
    import signal

    pid, _, reply_r = spare
    os.close(reply_r)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _hand_off(spare: tuple[int, int, int], raw: bytes) -> bool:
    """Write the request to the spare and close the pipe; False when the spare is gone."""
    _, request_w, _ = spare
    view = memoryview(raw)
    try:
        while view:
            view = view[os.write(request_w, view) :]
    except OSError:  # BrokenPipeError: the spare died
        return False
    finally:
        os.close(request_w)
    return True


def _collect(reply_r: int, pid: int, cap: int) -> tuple[bytes, bool, int, Any]:
    """Read the child's reply pipe until the child exits; (data, overflow, status, rusage)."""
    import select

    pidfd = os.pidfd_open(pid)
    chunks: list[bytes] = []
    size = 0
    overflow = False
    poller = select.poll()
    poller.register(reply_r, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    exited = False
    pipe_open = True
    while not exited:
        for fd, _ in poller.poll():
            if fd == pidfd:
                exited = True
        # Drain whatever is there without blocking (a grandchild may hold the write end).
        while pipe_open:
            ready = select.select([reply_r], [], [], 0)[0]
            if not ready:
                break
            chunk = os.read(reply_r, 1 << 16)
            if not chunk:
                poller.unregister(reply_r)
                pipe_open = False
                break
            if size + len(chunk) > cap:
                overflow = True
            else:
                chunks.append(chunk)
                size += len(chunk)
            if overflow:
                break
        if overflow:
            break
    os.close(pidfd)
    if overflow:
        import signal

        os.kill(pid, signal.SIGKILL)
    _, status, rusage = os.wait4(pid, 0)
    return b"".join(chunks), overflow, status, rusage


def _serve_spare(spare: tuple[int, int, int], raw: bytes, limits: dict[str, Any], me: int,
                 cap: int) -> dict[str, Any]:
    """Run the raw request in the pre-forked `spare` (a fresh spare if that one is gone)."""
    if not _hand_off(spare, raw):
        _discard_spare(spare)
        spare = _fork_spare(limits)
        _hand_off(spare, raw)  # if this one died too, _finish reports how
    pid, _, reply_r = spare
    return _finish(pid, reply_r, me, cap)


def _finish(pid: int, reply_r: int, me: int, cap: int) -> dict[str, Any]:
    """Collect the child's reply, interpret its exit, kill leftovers and empty /tmp."""
    try:
        data, overflow, status, rusage = _collect(reply_r, pid, cap)
    finally:
        os.close(reply_r)
    reply: dict[str, Any]
    if overflow:
        reply = {"overflow": True}
    elif os.WIFSIGNALED(status):
        reply = {"signal": os.WTERMSIG(status), "cpu_s": rusage.ru_utime + rusage.ru_stime}
    else:
        parsed: Any = None
        lines = data.strip().splitlines()
        if lines:
            try:
                parsed = json.loads(lines[-1])
            except ValueError:
                parsed = None
        if isinstance(parsed, dict) and (
            isinstance(parsed.get("fatal"), str)
            or (isinstance(parsed.get("stdout"), str) and (parsed.get("error") is None or isinstance(parsed.get("error"), str)))
        ):
            reply = {k: parsed.get(k) for k in ("stdout", "error", "fatal") if k in parsed}
        else:
            reply = {"fatal": f"no reply (exit status {os.waitstatus_to_exitcode(status)})"}
    clean = _kill_leftovers((me,))
    clean = _empty_dir("/tmp") and clean
    if not clean:
        reply["dirty"] = True
    return reply


def _serve_fresh(sock: Any, limits: dict[str, Any], cap: int) -> None:
    me = os.getpid()
    spare = _fork_spare(limits)
    _send_frame(sock, {"hello": True, "pid": me})
    while True:
        raw = _recv_frame(sock)  # parsed by the child, not here
        _send_frame(sock, _serve_spare(spare, raw, limits, me, cap))
        spare = _fork_spare(limits)  # while the runtime reads the reply: off the critical path


# --- reuse mode: one worker process runs every request -----------------------------------------

# Runs whose error starts with one of these leave the process in a state we do not trust.
_UNTRUSTED_ERRORS = ("MemoryError", "RecursionError")


class _Discard:
    """Stands in for a std stream user code closed (prints outside capture are dropped anyway)."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _Baseline:
    """The worker's state right after setup, and how to put it back after a run.

    Everything here is either restored (cheap: identity checks first, a copy only when something
    changed) or reported as `dirty` by `restore`. See the module docstring for what is not."""

    def __init__(self, server_globals: dict[str, Any], devnull: int, spawned: list[str]) -> None:
        import _signal  # the C module: signal's wrappers convert every number to an enum
        import builtins
        import signal

        if not _in_own_pid_namespace():  # `restore` kills every process it sees
            raise RuntimeError("_Baseline is for a sandbox server in its own pid namespace")
        self.devnull = devnull
        self.modules = dict(sys.modules)
        self.packages = {name for name, module in self.modules.items()
                         if "." not in name and hasattr(module, "__path__")}
        self.builtins = dict(builtins.__dict__)
        self.sys = dict(sys.__dict__)
        self.lists = [(seq, list(seq)) for seq in (sys.path, sys.meta_path, sys.path_hooks)]
        self.importer_cache = dict(sys.path_importer_cache)
        self.server_globals = server_globals
        self.globals = dict(server_globals)
        self.environ = dict(os.environ)
        self.environ_data = dict(getattr(os.environ, "_data", {}))
        self.cwd = os.getcwd()
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.recursion = sys.getrecursionlimit()
        self.switch = sys.getswitchinterval()
        # Raw numbers and handlers through `_signal`: the `signal` wrappers' enum conversion made
        # this loop a quarter of a trivial run's CPU (76 vs 3 us for the 60-odd signals).
        self.handlers = {s: _signal.getsignal(s) for s in _signal.valid_signals()
                         if s not in (signal.SIGKILL, signal.SIGSTOP) and _signal.getsignal(s) is not None}
        self.mask = _signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self.probes = _Probes(spawned)
        self.fds = self._open_fds()  # after the probes opened theirs
        self.resets = self._module_state()

    @staticmethod
    def _open_fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    @staticmethod
    def _module_state() -> list[Any]:
        """Resets (no-argument callables) for the global state of preloaded modules that a fresh
        child would inherit unchanged, and that ordinary math code changes as a side effect:
        random's and numpy's global generators (`np.random.seed(0)`), decimal's context, numpy's
        print and floating-point error options, mpmath's working precision (`mp.dps = 50`),
        sympy's global evaluation flags and printer settings (`init_printing()`), and the int
        to str digit limit. Left as they were, one problem's run would change what every later
        run on this worker prints. Each reset compares before it writes: a few us a run."""
        resets: list[Any] = []
        random = sys.modules.get("random")
        if random is not None:
            state = random.getstate()
            resets.append(lambda: random.setstate(state))
        decimal = sys.modules.get("decimal")
        if decimal is not None:
            context = decimal.getcontext().copy()
            resets.append(lambda: decimal.setcontext(context.copy()))
        get_digits = getattr(sys, "get_int_max_str_digits", None)
        if get_digits is not None:
            set_digits, digits = sys.set_int_max_str_digits, get_digits()

            def int_digits() -> None:
                if get_digits() != digits:
                    set_digits(digits)

            resets.append(int_digits)
        mtrand = sys.modules.get("numpy.random.mtrand")
        generator = getattr(mtrand, "_rand", None)  # the RandomState behind np.random.rand & co.
        if generator is not None:
            # Re-seeding takes 2 us where reading the state back (get_state) takes 25. The seed is
            # drawn from the state every worker of this sandbox inherits from its supervisor, so
            # each worker, like each fresh child, starts every run from the same state.
            seed = int(generator.randint(2**31))
            generator.seed(seed)
            resets.append(lambda: generator.seed(seed))
        numpy = sys.modules.get("numpy")
        if numpy is not None and hasattr(numpy, "get_printoptions") and hasattr(numpy, "geterr"):
            # The functions as they are now: a run may replace the module's attributes.
            get_print, set_print = numpy.get_printoptions, numpy.set_printoptions
            get_err, set_err = numpy.geterr, numpy.seterr
            printing, errors = get_print(), get_err()

            def numpy_options() -> None:
                if get_print() != printing:
                    set_print(**printing)
                if get_err() != errors:
                    set_err(**errors)

            resets.append(numpy_options)
        mpmath = sys.modules.get("mpmath")
        context_mp = getattr(mpmath, "mp", None)
        if context_mp is not None:
            prec, pretty = context_mp.prec, context_mp.pretty

            def mpmath_context() -> None:
                if context_mp.prec != prec:
                    context_mp.prec = prec
                if context_mp.pretty != pretty:
                    context_mp.pretty = pretty

            resets.append(mpmath_context)
        flags = getattr(sys.modules.get("sympy.core.parameters"), "global_parameters", None)
        if flags is not None:
            saved_flags = dict(vars(flags))  # evaluate, distribute, exp_is_pow

            def sympy_flags() -> None:
                if vars(flags) != saved_flags:
                    for name, value in saved_flags.items():
                        setattr(flags, name, value)  # its __setattr__ clears sympy's cache

            resets.append(sympy_flags)
        printer = getattr(sys.modules.get("sympy.printing.printer"), "Printer", None)
        settings = getattr(printer, "_global_settings", None)
        if isinstance(settings, dict):
            saved_settings = dict(settings)

            def sympy_printing() -> None:
                if settings != saved_settings:
                    settings.clear()
                    settings.update(saved_settings)

            resets.append(sympy_printing)
        return resets

    @staticmethod
    def _restore_dict(current: dict[Any, Any], saved: dict[Any, Any]) -> None:
        if current == saved:  # C-level; values compare by identity first
            return
        for key in [k for k in current if k not in saved]:
            del current[key]
        for key, value in saved.items():
            if current.get(key) is not value:
                current[key] = value

    def _restore_modules(self) -> None:
        """sys.modules back to the baseline, new imports dropped — except new submodules of
        packages already loaded (sympy imports dozens lazily): dropping those would make the
        next run import second copies whose classes are not the ones the package already holds,
        so they join the baseline instead."""
        current = sys.modules
        if current == self.modules:
            return
        for name in [k for k in current if k not in self.modules]:
            if name.partition(".")[0] in self.packages:
                self.modules[name] = current[name]
            else:
                del current[name]
        self._restore_dict(current, self.modules)

    def restore(self, keep: tuple[int, ...]) -> bool:
        """Put the process back; False when something could not be (the worker must go)."""
        import _signal
        import gc
        import signal

        # 1) Finalizers of this run's garbage run now, not in the middle of the next run. A
        #    thread that outlived the run cannot be stopped: nothing else matters then.
        gc.collect()
        if self.probes.threads() != 1:
            return False
        # 2) Interpreter-wide state. sys first: it holds modules, stdio and the hooks.
        self._restore_dict(sys.__dict__, self.sys)
        for seq, saved in self.lists:
            if seq != saved:
                seq[:] = saved
        self._restore_dict(sys.path_importer_cache, self.importer_cache)
        self._restore_modules()
        import builtins

        self._restore_dict(builtins.__dict__, self.builtins)
        self._restore_dict(self.server_globals, self.globals)
        for name in ("stdin", "stdout", "stderr"):
            if getattr(getattr(sys, name), "closed", False):
                setattr(sys, name, _Discard())
        sys.settrace(None)
        sys.setprofile(None)
        threading = sys.modules.get("threading")
        if threading is not None:
            threading.settrace(None)
            threading.setprofile(None)
        if sys.getrecursionlimit() != self.recursion:
            sys.setrecursionlimit(self.recursion)
        if sys.getswitchinterval() != self.switch:
            sys.setswitchinterval(self.switch)
        for reset in self.resets:
            reset()
        # 3) Process state.
        # os.environ's own == goes through Mapping (6 us); its dict of bytes compares in C.
        data = getattr(os.environ, "_data", None)
        if (os.environ != self.environ) if data is None else (data != self.environ_data):
            os.environ.clear()
            os.environ.update(self.environ)
            time = sys.modules.get("time")
            if time is not None and hasattr(time, "tzset"):
                time.tzset()  # a run's TZ= plus tzset() would outlive the variable
        os.chdir(self.cwd)
        os.umask(self.umask)
        for which in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
            if signal.getitimer(which) != (0.0, 0.0):
                signal.setitimer(which, 0)
        for number, handler in self.handlers.items():
            if _signal.getsignal(number) is not handler:
                _signal.signal(number, handler)
        _signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        clean = True
        try:
            for fd in (0, 1, 2):
                os.dup2(self.devnull, fd)
        except OSError:
            clean = False  # our /dev/null fd was closed
        # 4) What cannot be reset: report it.
        if self._open_fds() != self.fds:
            clean = False  # an fd leaked, or one of ours was closed or replaced
        if self.probes.new_pids() and _other_pids(keep):
            _kill_leftovers(keep)
            clean = False  # killed, but it ran beside us: its effects are unknown
        if not self.probes.tmp_empty():
            clean = _empty_dir("/tmp") and clean
        self.probes.rearm()
        return clean


class _Probes:
    """Cheap answers to three questions `_Baseline.restore` asks after every run, each falling
    back to the full check whenever it cannot answer for sure. Listing /proc, /proc/self/task
    and /tmp took ~48 us of a restore's ~95 (timeit in the image, hot caches); among busy
    processes on 2 cores a restore costs ~2x that, more than a trivial run itself. Measured in
    the pool (4 Docker workers, 8 callers, CPU time of `restore`): ~200 -> ~180 us a run.
    - threads: the num_threads field of /proc/self/stat, read with pread on a kept fd;
    - new processes: /proc/sys/kernel/ns_last_pid (the last pid allocated in the reader's pid
      namespace: every process or thread created in the sandbox moves it), plus any fork-type
      audit event; only when either moved is /proc listed. Not a defence against code that
      deliberately creates exactly pid_max processes to wrap the counter back (see "What reuse
      mode does NOT isolate": such code can disable these checks outright anyway);
    - /tmp empty: on tmpfs a directory's size counts its entries, so a stat says it (checked
      once here by creating a file; elsewhere /tmp is listed).
    A kept fd is trusted only while fstat still shows the file opened here (user code may
    close or dup2 over it); the fd check of `restore` sees those fds as part of the baseline."""

    def __init__(self, spawned: list[str]) -> None:
        self.stat_fd = self._open("/proc/self/stat")
        self.pid_fd = self._open("/proc/sys/kernel/ns_last_pid")
        self.spawned = spawned  # filled by the worker's audit hook (`_audit_flags`)
        self.tmp_size = self._tmp_size()
        self.last_pid = self.seen_pid = self._read(self.pid_fd)

    @staticmethod
    def _open(path: str) -> tuple[int, tuple[int, int]] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        return fd, (st.st_dev, st.st_ino)

    @staticmethod
    def _read(kept: tuple[int, tuple[int, int]] | None) -> bytes | None:
        if kept is None:
            return None
        fd, identity = kept
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != identity:
                return None
            return os.pread(fd, 4096, 0)
        except OSError:
            return None

    @staticmethod
    def _tmp_size() -> int | None:
        try:
            if os.listdir("/tmp"):
                return None
            empty = os.stat("/tmp").st_size
            probe = "/tmp/.alphamath-probe"
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            try:
                grown = os.stat("/tmp").st_size
            finally:
                os.unlink(probe)
            return empty if grown != empty and os.stat("/tmp").st_size == empty else None
        except OSError:
            return None

    def threads(self) -> int:
        data = self._read(self.stat_fd)
        try:
            if data is not None:
                return int(data.rpartition(b")")[2].split()[17])  # field 20, num_threads
        except (IndexError, ValueError):
            pass
        return len(os.listdir("/proc/self/task"))

    def new_pids(self) -> bool:
        """False only when no process can have been created since `rearm`."""
        self.seen_pid = self._read(self.pid_fd)
        return bool(self.spawned) or self.seen_pid is None or self.seen_pid != self.last_pid

    def tmp_empty(self) -> bool:
        if self.tmp_size is not None:
            try:
                if os.stat("/tmp").st_size == self.tmp_size:
                    return True
            except OSError:
                pass
        return not os.listdir("/tmp")  # an unlistable /tmp raises: the worker ends, as before

    def rearm(self) -> None:
        """After `restore`'s checks: the next run's changes are measured from here. The pid
        `new_pids` just read is still current: any process alive then was killed (and the
        worker is dirty, so it exits), and none was left to create more."""
        self.spawned.clear()
        self.last_pid = self.seen_pid


_REFRESH_EXIT = 75  # a worker that ended clean and asks its supervisor for a fresh successor


def _serve_reuse(sock: Any, limits: dict[str, Any], devnull: int, refresh: int) -> None:
    """The supervisor forks the worker, then waits for it (see the module docstring). A worker
    that ends with `_REFRESH_EXIT` after `refresh` runs (or with its CPU budget low) is followed
    by a fresh fork of this process, which never ran user code: a worker's leftovers (module
    attributes, caches, C-level state) die with it for the price of a fork (milliseconds),
    where a new sandbox re-imports sympy and numpy (~1 CPU-s)."""
    first = True
    while True:
        worker = os.fork()
        if worker == 0:
            _reuse_worker(sock, limits, devnull, supervisor=os.getppid(), refresh=refresh, hello=first)
        first = False
        if not _supervise(sock, worker):
            os._exit(0)


def _supervise(sock: Any, worker: int) -> bool:
    """Reap children until the worker ends; True when it asked for a successor, else report its
    death by a signal and return False (the sandbox ends). A run's own `os._exit(75)` is taken
    for a request too: its successor then waits for a request while the runtime waits for the
    reply until the run's timeout retires the sandbox, as for an endless loop."""
    while True:
        try:
            pid, status, rusage = os.wait4(-1, 0)  # we may be the namespace's init (bwrap)
        except ChildProcessError:
            return False
        except InterruptedError:
            continue
        if pid == worker:
            break
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _REFRESH_EXIT:
        return True
    if os.WIFSIGNALED(status):
        try:
            _send_frame(sock, {"signal": os.WTERMSIG(status), "cpu_s": rusage.ru_utime + rusage.ru_stime})
        except OSError:
            pass
    return False


def _cpu_used() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_SPAWN_EVENTS = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "os.exec",
                 "subprocess.Popen")


# Events after which this worker's process differs in a way only a fresh one undoes: rlimits
# are soft = hard (`_apply_limits`), so a run that lowers one cannot raise it back, and every
# later run on the worker would inherit it (a MemoryError where a fresh child has room).
_RENEW_EVENTS = ("resource.setrlimit", "resource.prlimit")


def _audit_flags(spawned: list[str], renew: list[str]) -> list[str]:
    """Install an audit hook that records events a run cannot be trusted after: another audit
    hook (it would watch later runs) and ctypes (raw memory access). Returns the record.
    Process-creating events go to `spawned` (`_Probes.new_pids`); events that call for a fresh
    worker (`_RENEW_EVENTS`: the hand-over, not a new sandbox) to `renew`."""
    seen: list[str] = []

    def hook(event: str, _args: Any) -> None:
        if event == "sys.addaudithook" or event.startswith("ctypes."):
            seen.append(event)
        elif event.startswith(_SPAWN_EVENTS):
            spawned.append(event)
        elif event in _RENEW_EVENTS:
            renew.append(event)

    sys.addaudithook(hook)
    return seen


def _reuse_worker(sock: Any, limits: dict[str, Any], devnull: int, *, supervisor: int, refresh: int,
                  hello: bool) -> None:
    import gc
    import signal

    me = os.getpid()
    # Signals as a fresh child has them (`_child_setup`): a run that SIGTERMs itself dies.
    for name in _IGNORED_IN_SERVER:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    field_limit = _field_limit(limits)
    per_run = int(limits["cpu_s"])
    budget = int(_cpu_used()) + 1 + 2 * per_run  # see "RLIMIT_CPU in reuse mode" above
    _apply_limits(dict(limits, cpu_s=budget))
    spawned: list[str] = []
    renew: list[str] = []
    flags = _audit_flags(spawned, renew)
    keep = (me, supervisor)
    baseline = _Baseline(globals(), devnull, spawned)
    # The baseline's snapshots (copies of sys.modules, builtins, ...) live as long as the worker:
    # frozen, the collection in every `restore` no longer walks them (63 -> 37 us a run).
    gc.collect()
    gc.freeze()
    if hello:  # a successor takes over a connection the runtime already greeted
        _send_frame(sock, {"hello": True, "pid": me})
    runs = 0
    while True:
        raw = _recv_frame(sock)
        errors: list[str] = []
        request_id = None
        try:
            request = json.loads(raw)
            request_id = request.get("id")
            history = [str(snippet) for snippet in request.get("history", [])]
            code = str(request["code"])
        except BaseException as exc:
            reply = _fatal(exc)
        else:
            stdout, error = execute(history, code, errors)
            if os.getpid() != me:
                os._exit(0)  # a process forked by user code: never reply from it
            reply = {"stdout": cap_text(stdout, field_limit), "error": cap_text(error, field_limit)}
            del history, code, stdout, error
        reply["id"] = request_id
        clean = baseline.restore(keep)
        clean = (clean and not flags and os.getppid() == supervisor
                 and not any(e.startswith(_UNTRUSTED_ERRORS) for e in errors))
        if not clean:
            reply["dirty"] = True
        # No overflow check: cap_text keeps the two fields well below `max_output_bytes`.
        data = json.dumps(reply, ensure_ascii=True).encode("ascii")
        sock.sendall(len(data).to_bytes(_FRAME, "big") + data)
        if not clean:
            os._exit(0)  # the runtime replaces us; never serve from a state we do not trust
        runs += 1
        if runs >= refresh or renew or _cpu_used() >= budget - per_run:
            # A stopped supervisor (SIGSTOP from a run) could not fork our successor.
            os.kill(supervisor, signal.SIGCONT)
            os._exit(_REFRESH_EXIT)


def serve(sock_path: str, config: dict[str, Any]) -> None:
    """The long-lived server of one warm sandbox (see the module docstring)."""
    import gc
    import importlib
    import signal
    import socket

    if not _in_own_pid_namespace():
        raise SystemExit("the sandbox server must run in its own pid namespace")
    for name in _IGNORED_IN_SERVER:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:  # not ptrace-able, /proc/<us> root-owned: a child cannot tamper with the server
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except Exception:
        pass
    limits = dict(config["limits"])
    cap = int(limits.get("max_output_bytes", 1_000_000))
    # Preload heavy libraries once: forked children (or the reusing worker) find them in
    # sys.modules, so `import sympy` costs nothing per run; namespaces stay clean (nothing is
    # pre-imported there).
    for module in config.get("preload", []):
        try:
            importlib.import_module(module)
        except Exception:
            pass
    gc.collect()
    gc.freeze()  # children do not dirty the inherited objects' pages; collections skip them
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sock_path)
    if config.get("reuse"):
        _serve_reuse(sock, limits, devnull, int(config["refresh"]))
    else:
        os.close(devnull)
        _serve_fresh(sock, limits, cap)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()  # noqa: F821 - executor.py's one-shot mode, defined earlier in the same source
