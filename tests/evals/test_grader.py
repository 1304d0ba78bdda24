from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from collections.abc import Iterator, Sequence

import pytest

from tests.loop_ticker import LoopTicker
from evals import Grader, is_equiv
from evals.grader import verify_answer

pytestmark = pytest.mark.timeout(120)

SLOW = "<<slow>>"


def slow_task(references: tuple[str, ...], prediction: str) -> bool:
    """Worker task for the timeout tests (runs in a spawned worker, so it must be top-level)."""
    if prediction == SLOW:
        time.sleep(600)  # a stand-in for sympy stuck on 2^{2^{2^{100}}}
    return verify_answer(references, prediction)


HOG = "<<memory hog>>"
CRASH = "<<worker crash>>"


def hostile_task(references: tuple[str, ...], prediction: str) -> bool:
    """Worker task standing in for sympy blowing up: it allocates past the worker's memory cap,
    or the worker dies outright (as when the kernel kills it)."""
    if prediction == HOG:
        blob = bytearray(8 * 2**30)  # over the RLIMIT_AS cap: MemoryError, not an OOM-killed host
        return bool(blob)
    if prediction == CRASH:
        os._exit(1)
    return verify_answer(references, prediction)


def test_memory_cap_and_dead_workers_are_contained() -> None:
    with Grader(max_workers=1, task=hostile_task, memory_limit_bytes=1 << 30) as g:
        assert g.is_equiv("x^2", HOG, timeout_s=30) is False
        assert g.is_equiv("x^2", "x^{2}", timeout_s=30) is True  # same pool, still serving
        started = g.pools_started
        assert g.is_equiv("y^2", CRASH, timeout_s=30) is False
        assert g.is_equiv("y^2", "y^{2}", timeout_s=30) is True  # a fresh pool took over
        # the crashing comparison is retried once (a bystander of another's crash deserves it),
        # so it costs two pools, and the next comparison runs in the third
        assert g.pools_started == started + 2


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(max_workers=2) as g:
        yield g


CASES: list[tuple[str | Sequence[str], str, bool]] = [
    # --- integers and decimals -----------------------------------------------------------------
    ("2", "2", True),
    ("2", "2.0", True),
    ("18", "18.00", True),
    ("0.5", ".5", True),
    ("2", "3", False),
    ("3", "3.0005", False),
    # --- fractions vs decimals, \dfrac / \tfrac ------------------------------------------------
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac12", "1/2", True),
    ("\\dfrac{9}{7}", "\\frac{9}{7}", True),
    ("\\tfrac{1}{3}", "0.333333", True),
    ("\\frac{1}{3}", "0.33", False),
    # --- roots -----------------------------------------------------------------------------------
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\sqrt{2}", "2^{1/2}", True),
    ("\\sqrt{2}", "1.41", False),
    # --- sets and tuples -------------------------------------------------------------------------
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("(3, -5)", "(3,-5)", True),
    ("(1,2)", "(2,1)", False),
    ("\\left(\\tfrac32, -\\tfrac52\\right)", "\\left( \\frac{3}{2}, -\\frac{5}{2} \\right)", True),
    ("1,2,3", "3,2,1", True),
    # --- intervals -------------------------------------------------------------------------------
    ("[1,2)", "[1,2)", True),
    ("(1,2]", "[1,2)", False),
    ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("(-\\infty, 3]", "(-\\infty,3)", False),
    ("x \\in [2,5)", "[2,5)", True),
    # --- thousands separators (GSM8K) ------------------------------------------------------------
    ("1,234", "1234", True),
    ("1234", "1,234", True),
    ("1{,}234", "1234", True),
    ("1,000", "1000.0", True),
    # --- signs -----------------------------------------------------------------------------------
    ("5", "-5", False),
    ("-3", "3", False),
    # --- dollars, text, expressions, matrices ----------------------------------------------------
    ("$10$", "10", True),
    ("\\frac{1}{2}", "$0.5$", True),
    ("\\text{(C)}", "C", True),
    ("C", "D", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
    # --- a list reference: any accepted answer ---------------------------------------------------
    (("3", "-3"), "-3", True),
    (["3", "-3"], "3", True),
    (("3", "-3"), "4", False),
]


@pytest.mark.parametrize(("reference", "prediction", "expected"), CASES)
def test_is_equiv_table(
    grader: Grader, reference: str | Sequence[str], prediction: str, expected: bool
) -> None:
    assert grader.is_equiv(reference, prediction) is expected


GARBAGE = b"\xff\xfe\x00garbage\x80{".decode("utf-8", errors="surrogateescape")


@pytest.mark.parametrize(
    ("reference", "prediction"),
    [
        ("1", None),
        (None, "1"),
        (None, None),  # nothing to be right about: False, unlike MARIO_EVAL's True
        ("1", ""),
        ("", "1"),
        ("1", "   "),
        ((), "1"),
        ("1", "1" * 100_000),
        ("1" * 100_000, "1"),
        ("\\frac{1}{2", "0.5"),
        ("\\frac{1}{2}", "\\frac{1}{2"),
        ("{{{", "}}}"),
        ("1", GARBAGE),
        (GARBAGE, GARBAGE + "x"),
        ("1", "\x00\x01\x02"),
    ],
)
def test_bad_inputs_are_false_and_quick(
    grader: Grader, reference: object, prediction: object
) -> None:
    start = time.monotonic()
    assert grader.is_equiv(reference, prediction) is False  # type: ignore[arg-type]
    assert time.monotonic() - start < 5


def test_module_level_is_equiv() -> None:
    assert is_equiv("\\frac{1}{2}", "0.5") is True
    assert is_equiv("1", None) is False


def test_verify_answer_in_process() -> None:
    assert verify_answer(("\\frac{1}{2}",), "0.5") is True
    assert verify_answer(("2",), "3") is False


def test_many_threads(grader: Grader) -> None:
    cases = [(r, p, e) for r, p, e in CASES if isinstance(r, str)][:20]
    results: dict[tuple[int, int], bool] = {}
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        for i, (r, p, _) in enumerate(cases):
            results[(t, i)] = grader.is_equiv(r, p + " " * t)  # distinct keys: bypass the cache

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(results) == 8 * len(cases)
    for (t, i), verdict in results.items():
        assert verdict is cases[i][2], (t, cases[i])


def test_grade_many_keeps_order(grader: Grader) -> None:
    pairs = [(r, p) for r, p, _ in CASES]
    assert grader.grade_many(pairs) == [e for _, _, e in CASES]
    assert grader.grade_many([]) == []


async def test_ais_equiv_does_not_block_the_loop(grader: Grader) -> None:
    # Uncached keys (a unique suffix), so every call goes to the pool.
    preds = [f"{k}/{2 * k} + 0*{k}" for k in range(1, 21)]
    async with LoopTicker() as ticker:
        verdicts = await asyncio.gather(*(grader.ais_equiv("1/2", p) for p in preds))
    assert verdicts == [True] * 20
    assert ticker.ticks > 20  # the loop ran other tasks while the workers compared


def test_cache_hit_skips_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    with Grader(max_workers=1) as g:
        assert g.is_equiv("x^2+2x", "x(x+2)") is True
        calls: list[object] = []
        monkeypatch.setattr(g, "_submit", lambda *a: calls.append(a) or False)
        assert g.is_equiv("x^2+2x", "x(x+2)") is True
        assert g.is_equiv(" x^2+2x", "x(x+2) ") is True  # same key after stripping
        assert g.is_equiv("\\frac{3}{4}", "0.75") is True  # plain numbers: no pool at all
        assert calls == []
        assert g.is_equiv("x^2+2x", "x(x+3)") is False
        assert len(calls) == 1


def _gone(pid: int, within_s: float) -> bool:
    """True once `pid` has exited (reaped, or a zombie waiting to be)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            # Reaped between open() and read(): the kernel answers ESRCH for the open file.
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def test_timeout_kills_the_pool_and_it_recovers() -> None:
    with Grader(max_workers=2, task=slow_task) as g:
        assert g.is_equiv("x+1", "1+x") is True
        assert g.pools_started == 1
        old = g._state.pool
        assert old is not None
        start = time.monotonic()
        assert g.is_equiv("1", SLOW, timeout_s=0.5) is False
        assert time.monotonic() - start < 10
        assert g._state.pool is None
        for proc in old.processes:
            # Not proc.join()/is_alive(): the executor's own thread may reap the worker first,
            # after which multiprocessing cannot tell a dead child from a live one.
            assert _gone(proc.pid, within_s=10), f"worker {proc.pid} still running"
        # The next call builds a fresh pool and grades normally.
        assert g.is_equiv("x+2", "2+x") is True
        assert g.pools_started == 2
        # The verdict of the slow input is cached: it does not kill the new pool again.
        assert g.is_equiv("1", SLOW, timeout_s=0.5) is False
        assert g.pools_started == 2


async def test_async_timeout_and_bystanders() -> None:
    async with Grader(max_workers=2, task=slow_task) as g:
        slow = asyncio.create_task(g.ais_equiv("1", SLOW, timeout_s=1.0))
        # A bystander graded while the slow one is stuck in the other worker.
        assert await g.ais_equiv("x+3", "3+x") is True
        assert await slow is False
        assert await g.ais_equiv("x+4", "4+x") is True
        assert g.pools_started == 2


async def test_cancelled_caller_frees_its_slot() -> None:
    async with Grader(max_workers=1, task=slow_task) as g:
        slow = asyncio.create_task(g.ais_equiv("1", SLOW, timeout_s=1.0))
        waiting = asyncio.create_task(g.ais_equiv("x+5", "5+x"))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await slow is False
        assert await g.ais_equiv("x+6", "6+x") is True  # the slot of the cancelled one came back


def test_closed_grader_returns_false_without_hanging() -> None:
    g = Grader(max_workers=1)
    g.close()
    for _ in range(3):  # more calls than slots: no slot may leak
        assert g.is_equiv("x+1", "1+x") is False
    assert g.is_equiv("1", "1.0") is True  # the fast paths need no pool


def test_fork_is_refused() -> None:
    with pytest.raises(ValueError, match="fork"):
        Grader(mp_context="fork")
