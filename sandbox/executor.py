"""The program that runs INSIDE the sandbox: replay history, run one snippet, reply with JSON.

It is started as `python3 -I -B -c SOURCE` where SOURCE is this file followed by `server.py`
(`sandbox.bwrap._executor_source`: the parent passes the text, so the sandbox never needs to read
the repository). Without arguments (one-shot mode, `main()`) it reads one JSON request from stdin

    {"history": [code, ...], "code": str,
     "limits": {"memory_mb", "cpu_s", "file_size_mb", "nproc", "max_output_bytes"}}

and writes one JSON line `{"stdout": str, "error": str | null}` to its original stdout; with
`serve SOCKET CONFIG` it is a long-lived server (`server.py`). It uses the standard library only
and imports nothing of ours: it must run on any python3 >= 3.9.

Observation semantics are AlphaMath's python tool (Super_MARIO `mcts_math/tools/python_tool.py`,
ALPHAMATH.md §1.3), reproduced quirk for quirk because the released model was trained on them:

- the input is sanitized: leading backticks/whitespace and one leading `python` (any case) are
  removed, trailing backticks/whitespace too (the model's code arrives with its ```python fence);
- "print statements" are top-level `print(...)` expression statements, or top-level
  `if`/`for`/`while`/`def` statements whose body (not `else`) holds one, recursively;
- with 0 or 1 of them, every statement but the last is exec'd with stdout NOT captured (so a
  print there is lost), then the last one is eval'd with stdout captured: a non-None value is the
  output, None means the captured stdout; if eval raises (e.g. the last statement is not an
  expression) the last statement is exec'd (again) with stdout captured;
- with >= 2, the code is cut into segments each ending at such a statement; each segment is run
  as above and contributes `"<print args>: " + output`, where `<print args>` are the non-greedy
  `print\\((.*?)\\)` matches in the statement's source joined by spaces (so `print(f(x))` gives
  `f(x:`); statements after the last print are never run;
- any exception gives only `"{Type}: {message}"`, no traceback, and discards partial output;
- a string output that parses as a float becomes `str(round(x, 4)) + "\\n"` unless that is
  longer (so a printed `1/3` shows `0.3333`, a printed `1e-7` shows `0.0`); a non-string value
  (a bare last expression `1/3`) is NOT rounded — it shows `0.3333333333333333`;
- outputs longer than 500 chars become the first 250 + "..." + the last 250 (per segment);
- the caller strips the observation.

Deliberate differences from the original (each for isolation or robustness, none changes the
observation of ordinary code):

1. A fresh process per run by default: history is replayed in a brand-new interpreter, so no
   state leaks between trees or branches (the original reused one globals dict per worker
   process). The opt-in reuse mode (`server.py`) runs many requests in one process, each in a
   fresh namespace with the process state reset in between — still more isolated than the
   original, less than a fresh process; see its docstring for what it does not reset.
2. Globals are a clean module namespace named `__alphamath_sandbox__`, not a snapshot of
   `agents/tree.py`'s module globals: names like `os`, `timeout` or `PythonInterpreter` are not
   pre-defined. The name is not `__main__`, as in the original, so `if __name__ == "__main__":`
   blocks do not run.
3. Timeouts are enforced from outside (wall clock by the parent, RLIMIT_CPU here), not by
   signals, and cover history plus the new code together (the original gave each call 15 s).
4. stdout/stderr writes that escape capture (prints outside the captured statement,
   `os.write(1, ...)`, C-level output) go to /dev/null and cannot corrupt the reply channel.
5. Captured output is bounded: beyond 1,000,000 chars only the first and last 4,096 are kept.
   The observation is identical (it is truncated to 250 + "..." + 250 anyway) except that a
   gigantic output that would have parsed as a float is no longer rounded. The reply's fields
   are also capped (head + "..." + tail) to fit `max_output_bytes`; the original never
   truncated error messages.
6. BaseExceptions (SystemExit from `exit()`, KeyboardInterrupt, GeneratorExit) become error
   observations like any exception; in the original they escaped the tool and killed the step.
7. The observation is returned split into `stdout` / `error` (`"Type: message"`) instead of one
   string; the text the model sees is the same.
"""

from __future__ import annotations

import ast
import builtins
import functools
import io
import json
import os
import re
import sys
import types
from contextlib import redirect_stdout
from types import CodeType
from typing import Any, NamedTuple

MAX_OBSERVATION_CHARS = 500
CAPTURE_LIMIT_CHARS = 1_000_000
CAPTURE_KEEP_CHARS = 4096
NAMESPACE_NAME = "__alphamath_sandbox__"

_LEADING = re.compile(r"^(\s|`)*(?i:python)?\s*")
_TRAILING = re.compile(r"(\s|`)*$")
_PRINT_ARGS = re.compile(r"print\((.*?)\)")


class BoundedCapture(io.TextIOBase):
    """A write-only text stream that keeps everything up to a limit, then only head and tail."""

    def __init__(self, limit: int = CAPTURE_LIMIT_CHARS, keep: int = CAPTURE_KEEP_CHARS) -> None:
        super().__init__()
        self._limit = limit
        self._keep = keep
        self._parts: list[str] = []
        self._size = 0
        self._head: str | None = None  # set once the limit was passed
        self._tail = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._head is None:
            if self._size + len(text) <= self._limit:
                self._parts.append(text)
                self._size += len(text)
                return len(text)
            everything = "".join(self._parts) + text
            self._parts = []
            self._head = everything[: self._keep]
            self._tail = everything[-self._keep :]
        else:
            self._tail = (self._tail + text)[-self._keep :]
        return len(text)

    def getvalue(self) -> str:
        if self._head is None:
            return "".join(self._parts)
        return self._head + self._tail


def sanitize(code: str) -> str:
    """Strip fences/whitespace and a leading `python`, exactly as the original tool does."""
    code = _LEADING.sub("", code)
    return _TRAILING.sub("", code)


def _is_print_statement(node: ast.AST) -> bool:
    if (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "print"
    ):
        return True
    if isinstance(node, (ast.If, ast.While, ast.For, ast.FunctionDef)):
        return any(_is_print_statement(child) for child in node.body)
    return False


def print_statement_indices(body: list[ast.stmt]) -> list[int]:
    """Indices of the top-level statements the original tool counts as prints."""
    return [i for i, node in enumerate(body) if _is_print_statement(node)]


def shorten(output: Any) -> Any:
    """Float rounding and 250+...+250 truncation. Returns a non-str value unchanged when short,
    like the original, so the caller's f-string formatting (`format(value, "")`) is preserved."""
    if isinstance(output, str):
        try:
            rounded = str(round(float(output), 4)) + "\n"
        except Exception:
            pass
        else:
            if len(output) >= len(rounded):
                output = rounded
    text = str(output)
    if len(text) > MAX_OBSERVATION_CHARS:
        half = MAX_OBSERVATION_CHARS // 2
        return text[:half] + "..." + text[-half:]
    return output


def postprocess(output: Any) -> str:
    """`shorten` then format, as the original's `f"{ret}"`. (The caller strips.)"""
    return f"{shorten(output)}"


class _Segment(NamedTuple):
    """One segment of a snippet, compiled: all its statements but the last (run uncaptured),
    the last as an expression (None when it is not one) and as a statement."""

    label: str  # "<print args>:" of a multi-print snippet; "" otherwise (and then unused)
    body: CodeType | str
    last_eval: CodeType | str | None
    last_exec: CodeType | str


def _compiled(node: ast.Module | ast.Expression, mode: str) -> CodeType | str:
    """`node` compiled straight from the tree. The original unparses every segment and compiles
    the text (half of a trivial run's CPU); the code is the same. A compile-time error (`return`
    outside a function...) returns the unparsed text instead, so that exec/eval raise the
    original's exact message (line numbers count within the segment) at the moment it did."""
    try:
        return compile(node, "<string>", mode)
    except SyntaxError:
        return ast.unparse(node)


def _segment(statements: list[ast.stmt], label: str) -> _Segment:
    last = statements[-1] if statements else None
    last_eval = (_compiled(ast.Expression(body=last.value), "eval")
                 if isinstance(last, ast.Expr) else None)
    return _Segment(label, _compiled(ast.Module(statements[:-1], type_ignores=[]), "exec"),
                    last_eval, _compiled(ast.Module(statements[-1:], type_ignores=[]), "exec"))


def _plan(code: str) -> tuple[_Segment, ...]:
    """The segments of `code` (see the module docstring), compiled; raises a parse error."""
    code = sanitize(code)
    tree = ast.parse(code)
    prints = print_statement_indices(tree.body)
    if len(prints) <= 1:
        return (_segment(tree.body, ""),)
    segments = []
    for start, end in zip([-1] + prints, prints):
        source = ast.get_source_segment(code, tree.body[end]) or ""
        matches = _PRINT_ARGS.findall(source)
        label = " ".join(matches) + ":" if matches else ""
        segments.append(_segment(tree.body[start + 1 : end + 1], label))
    return tuple(segments)


# Searches replay the same ancestors' code in run after run, so a (reusing) process keeps the
# plans of recent snippets: a plan is a pure function of the text, and tuples, strings and code
# objects are immutable, so a cached plan carries nothing from one run into another. Large
# snippets are not kept (memory: a code object is a few times its text).
_cached_plan = functools.lru_cache(maxsize=512)(_plan)
_CACHED_PLAN_MAX_CHARS = 8192  # a model's code step is rarely above 2 KiB; 512 x 8 KiB bounds it


def _run_segment(segment: _Segment, namespace: dict[str, Any]) -> Any:
    """Exec all but the last statement uncaptured, then eval/exec the last one captured."""
    buffer = BoundedCapture()
    exec(segment.body, namespace)
    if segment.last_eval is not None:  # else the original's eval of the text raises SyntaxError
        try:
            with redirect_stdout(buffer):
                value = eval(segment.last_eval, namespace)
                # Shortening stays inside the try: if str(value) raises, the original falls
                # back to exec'ing the statement again and returns its captured stdout.
                return shorten(buffer.getvalue() if value is None else value)
        except Exception:
            pass
    with redirect_stdout(buffer):
        exec(segment.last_exec, namespace)
    return shorten(buffer.getvalue())


def observe(code: str, namespace: dict[str, Any]) -> str:
    """The raw (unstripped) observation of `code`; raises whatever the code raises."""
    segments = _cached_plan(code) if len(code) <= _CACHED_PLAN_MAX_CHARS else _plan(code)
    if len(segments) == 1:
        return f"{_run_segment(segments[0], namespace)}"
    return "".join([f"{segment.label} {_run_segment(segment, namespace)}" for segment in segments])


def format_error(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:
        message = ""
    return f"{type(exc).__name__}: {message}"


def run_snippet(code: str, namespace: dict[str, Any]) -> tuple[str, str | None]:
    """Run one snippet in `namespace`; return (stdout, error) with the observation stripped."""
    try:
        output = observe(code, namespace)
    except BaseException as exc:  # deliberate: SystemExit etc. become observations too
        return "", format_error(exc).strip()
    return output.strip(), None


def new_namespace() -> dict[str, Any]:
    """A clean module namespace: builtins only, no pre-imported libraries."""
    module = types.ModuleType(NAMESPACE_NAME)
    module.__dict__["__builtins__"] = builtins
    return module.__dict__


def execute(history: list[str], code: str,
            errors: list[str] | None = None) -> tuple[str, str | None]:
    """Replay `history` silently (errors ignored, as AlphaMath re-executes ancestors), run `code`.
    `errors`, when given, receives every snippet's error, history's included (the reusing server
    retires its process after a MemoryError or RecursionError anywhere)."""
    namespace = new_namespace()
    for snippet in history:
        _, error = run_snippet(snippet, namespace)
        if error is not None and errors is not None:
            errors.append(error)
    stdout, error = run_snippet(code, namespace)
    if error is not None and errors is not None:
        errors.append(error)
    return stdout, error


def cap_text(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    half = max(limit // 2 - 2, 1)
    return text[:half] + "..." + text[-half:]


def _apply_limits(limits: dict[str, Any]) -> None:
    import resource

    mib = 1 << 20
    wanted = {
        resource.RLIMIT_AS: int(limits["memory_mb"]) * mib,
        resource.RLIMIT_CPU: int(limits["cpu_s"]),
        resource.RLIMIT_FSIZE: int(limits["file_size_mb"]) * mib,
        resource.RLIMIT_CORE: 0,
    }
    # The Docker server passes no "nproc": RLIMIT_NPROC counts the uid host-wide, across every
    # container, so there the cgroup's --pids-limit bounds processes instead.
    if limits.get("nproc") is not None:
        wanted[resource.RLIMIT_NPROC] = int(limits["nproc"])
    for which, value in wanted.items():
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        # soft = hard: user code cannot raise it back.
        resource.setrlimit(which, (value, value))


def main() -> None:
    # Keep private references: user code may monkeypatch modules before we reply.
    write, dumps, getpid, exit_now = os.write, json.dumps, os.getpid, os._exit
    # 1) Protect the reply channel: only `reply_fd` reaches the parent; fds 0-2 become /dev/null.
    reply_fd = os.dup(1)  # non-inheritable (close-on-exec) by default
    raw = sys.stdin.buffer.read()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    main_pid = getpid()
    field_limit = 31_250
    try:
        request = json.loads(raw)
        limits = request["limits"]
        # ensure_ascii=True below: at most 12 bytes per char, two fields.
        field_limit = max(int(limits.get("max_output_bytes", 1_000_000)) // 32, 256)
        # 2) Limits before any user code.
        _apply_limits(limits)
        history = [str(snippet) for snippet in request.get("history", [])]
        code = str(request["code"])
    except Exception as exc:
        reply = {"stdout": "", "error": None, "fatal": f"sandbox setup failed: {format_error(exc)}"}
    else:
        # 3) Replay and run.
        stdout, error = execute(history, code)
        if getpid() != main_pid:
            exit_now(0)  # a child forked by user code: never reply from it
        reply = {"stdout": cap_text(stdout, field_limit), "error": cap_text(error, field_limit)}
    data = (dumps(reply, ensure_ascii=True) + "\n").encode("ascii")
    while data:
        data = data[write(reply_fd, data) :]
    # os._exit: do not wait for non-daemon threads or atexit handlers left by user code.
    exit_now(0)
