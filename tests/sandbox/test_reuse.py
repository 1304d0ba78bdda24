"""Reuse mode (`SandboxLimits.reuse_process`) on both pools: a pool of ONE worker, so consecutive
runs provably share a process, and nothing of one run is visible to the next — or the worker
was replaced."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sandbox import BwrapSandbox, DockerSandbox, SandboxLimits
from tests.sandbox.conftest import BWRAP_MISSING, DOCKER_MISSING, DOCKER_REASON, HAVE_BWRAP

pytestmark = pytest.mark.asyncio(loop_scope="session")

ONE = SandboxLimits(pool_size=1, max_uses=1000, tmpfs_mb=8, reuse_process=True)
# Which worker answered: a replacement is a new sandbox whose worker may get the same pid (and
# namespace inode, recycled), but it started later (clock ticks since boot, not namespaced).
PID = "print(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])"


BACKENDS = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason=BWRAP_MISSING)),
    pytest.param("docker", marks=pytest.mark.skipif(DOCKER_REASON is not None, reason=DOCKER_MISSING)),
]


async def _serving(backend: str, limits: SandboxLimits) -> AsyncIterator[BwrapSandbox | DockerSandbox]:
    box: BwrapSandbox | DockerSandbox = (BwrapSandbox if backend == "bwrap" else DockerSandbox)(limits)
    await box.start()
    try:
        yield box
    finally:
        await box.aclose()


@pytest_asyncio.fixture(loop_scope="session", params=BACKENDS)
async def one_box(request: pytest.FixtureRequest) -> AsyncIterator[BwrapSandbox | DockerSandbox]:
    async for box in _serving(request.param, ONE):
        yield box


async def _observe(box: BwrapSandbox | DockerSandbox, code: str) -> str:
    result = await box.run(code, timeout_s=20)
    assert not result.timed_out, result
    return result.observation


async def test_runs_share_one_limited_process(one_box: BwrapSandbox | DockerSandbox) -> None:
    code = "import os, resource\nprint(os.getpid(), resource.getrlimit(resource.RLIMIT_AS)[0])"
    first, second = [await _observe(one_box, code) for _ in range(2)]
    assert first == second == f"{first.split()[0]} {ONE.memory_mb << 20}"


async def test_no_state_leaks_between_runs(one_box: BwrapSandbox | DockerSandbox) -> None:
    pid = await _observe(one_box, PID)
    plant = (
        "import os, sys, builtins, random, sched, signal\n"
        "leak_global = 1\n"
        "sched.LEAK = 1\n"  # a module this run imported, monkeypatched
        "sys.modules['json'] = None\n"
        "builtins.LEAK = 1\n"
        "os.environ['LEAK'] = '1'\n"
        "os.chdir('/')\n"
        "open('/tmp/leak', 'w').write('x')\n"
        "os.makedirs('/tmp/d/e'); os.chmod('/tmp/d', 0)\n"
        "sys.setrecursionlimit(50)\n"
        "sys.stdout.close()\n"
        "random.seed(1)\n"
        "signal.signal(signal.SIGALRM, lambda *a: None); signal.setitimer(signal.ITIMER_REAL, 100)\n"
        "class Finalized:\n"
        "    def __del__(self): builtins.FINALIZED = 1\n"
        "cycle = Finalized(); cycle.me = cycle\n"
        "print('planted')"
    )
    assert await _observe(one_box, plant) == "planted"
    check = (
        "import os, sys, builtins, sched, random, signal\n"
        "print(sorted(os.listdir('/tmp')), hasattr(builtins, 'LEAK'), hasattr(builtins, 'FINALIZED'),"
        " sys.modules.get('json') is None, 'leak_global' in globals(), hasattr(sched, 'LEAK'),"
        " 'LEAK' in os.environ, os.getcwd(), sys.getrecursionlimit() > 50,"
        " signal.getitimer(signal.ITIMER_REAL), signal.getsignal(signal.SIGALRM) is signal.SIG_DFL)"
    )
    assert await _observe(one_box, check) == (
        "[] False False False False False False /tmp True (0.0, 0.0) True")
    # Uncaptured prints still work (stdout was closed), and random starts where a fresh child
    # would: the same state on every run.
    rolls = "import random\nprint('x')\nrandom.random()"
    assert await _observe(one_box, rolls) == await _observe(one_box, rolls)
    assert await _observe(one_box, PID) == pid  # all of the above without replacing the worker


# What the library state of a run looks like from inside: one line, so a difference shows.
LIBRARY_STATE = (
    "import numpy as np, mpmath, sympy, sys, time\n"
    "from sympy.core.parameters import global_parameters\n"
    "from sympy.printing.printer import Printer\n"
    "print(np.random.rand(), np.array([1/3]), np.geterr()['divide'], mpmath.mpf(1)/3,"
    " vars(global_parameters), Printer._global_settings, sys.get_int_max_str_digits(),"
    " time.strftime('%H', time.localtime(0)))"
)


async def test_library_state_set_in_passing_is_put_back(one_box: BwrapSandbox | DockerSandbox) -> None:
    # What math code does on the side: each would change what later runs on this worker print.
    pid = await _observe(one_box, PID)
    before = await _observe(one_box, LIBRARY_STATE)
    plant = (
        "import numpy as np, mpmath, sympy, sys, os, time\n"
        "from sympy.core.parameters import global_parameters\n"
        "np.random.seed(0)\n"
        "np.set_printoptions(precision=2)\n"
        "np.seterr(all='raise')\n"
        "mpmath.mp.dps = 50\n"
        "global_parameters.distribute = False\n"
        "sympy.init_printing(order='rev-lex')\n"  # sympy's printers' global settings
        "sys.set_int_max_str_digits(100000)\n"
        "os.environ['TZ'] = 'XYZ-9'; time.tzset()\n"
        "print('planted')"
    )
    assert await _observe(one_box, plant) == "planted"
    # The plant is visible within its own run (the probe is not blind to it) ...
    planted = await _observe(one_box, plant.replace("print('planted')", LIBRARY_STATE))
    assert planted != before and "0.5488135039273248" in planted  # np.random.seed(0)'s first draw
    # ... and gone from the next one, on the same worker.
    assert await _observe(one_box, LIBRARY_STATE) == before
    assert await _observe(one_box, PID) == pid


async def test_a_lowered_rlimit_hands_over_to_a_fresh_worker(one_box: BwrapSandbox | DockerSandbox) -> None:
    # rlimits are soft = hard: a run can lower one but nothing can raise it again, so the worker
    # hands over (a fork of its supervisor, not a new sandbox) instead of passing it on.
    limit = "import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])"
    pid, started = await _observe(one_box, PID), one_box.workers_started
    lower = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (300 << 20, 300 << 20))\nprint('lowered')"
    assert await _observe(one_box, lower) == "lowered"
    assert await _observe(one_box, limit) == str(ONE.memory_mb << 20)
    assert await _observe(one_box, PID) != pid
    assert one_box.workers_started == started


@pytest.mark.parametrize("code", [
    "import threading, time\nthreading.Thread(target=time.sleep, args=(100,), daemon=True).start()",
    "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)",
    "x = bytearray(4 * 10**9)",
    "def f(): f()\nf()",
    "import sys\nsys.addaudithook(lambda *a: None)",
    "import os\nos.open('/tmp', os.O_RDONLY)",
    # A process no audit event reports (Python 3.11's fork_exec signature): found through the
    # pid namespace's ns_last_pid, not the fork-type audit events (server.py `_Probes`).
    "import os, _posixsubprocess\nr, w = os.pipe()\n"
    "_posixsubprocess.fork_exec([b'sleep', b'1000'], [b'/bin/sleep'], True, (w,), None, None, -1, -1,"
    " -1, -1, -1, -1, r, w, False, True, -1, None, None, None, -1, None, False)\nos.close(r); os.close(w)",
    # A thread left running while the kept /proc/self/stat fd now reads a forged "1 thread".
    "import os, threading, time\nopen('/tmp/fake', 'w').write('1 (x) ' + ' '.join(['1'] * 60))\n"
    "for fd in os.listdir('/proc/self/fd'):\n"
    "    try:\n        target = os.readlink(f'/proc/self/fd/{fd}')\n    except OSError:\n        continue\n"
    "    if target.endswith('/stat'):\n"
    "        fake = os.open('/tmp/fake', os.O_RDONLY); os.dup2(fake, int(fd)); os.close(fake)\n"
    "threading.Thread(target=time.sleep, args=(100,), daemon=True).start()",
], ids=["thread", "process", "memory-error", "recursion-error", "audit-hook", "leaked-fd",
        "unaudited-process", "thread-behind-forged-stat-fd"])
async def test_what_cannot_be_reset_replaces_the_worker(one_box: BwrapSandbox | DockerSandbox,
                                                       code: str) -> None:
    pid = await _observe(one_box, PID)
    await one_box.run(code, timeout_s=20)
    assert await _observe(one_box, PID) != pid
    assert await _observe(one_box, "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))") in (
        "2", "3")  # init (docker's or the supervisor), supervisor and worker: nothing left behind


async def test_a_frame_forged_into_the_socket_never_reaches_another_run(
        one_box: BwrapSandbox | DockerSandbox) -> None:
    forge = (
        "import os, json\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    if os.readlink(f'/proc/self/fd/{fd}').startswith('socket:'):\n"
        "        data = json.dumps({'stdout': 'forged', 'error': None, 'id': '0'}).encode()\n"
        "        os.write(int(fd), len(data).to_bytes(4, 'big') + data)\n"
        "print('real')"
    )
    # Each attempt's worker answers with the forged frame first: retired, rerun once, then given up.
    assert await _observe(one_box, forge) == "RuntimeError: malformed reply from the sandbox server"
    assert [await _observe(one_box, "print(6 * 7)") for _ in range(3)] == ["42"] * 3


@pytest_asyncio.fixture(loop_scope="session", params=BACKENDS)
async def refreshing_box(request: pytest.FixtureRequest) -> AsyncIterator[BwrapSandbox | DockerSandbox]:
    """One sandbox whose worker hands over to a fresh fork every 3 runs; 1 CPU-s per run."""
    async for box in _serving(request.param, dataclasses.replace(ONE, worker_runs=3, cpu_s=1)):
        yield box


async def test_a_fresh_worker_takes_over_every_worker_runs(
        refreshing_box: BwrapSandbox | DockerSandbox) -> None:
    # A module attribute is what a reset leaves (server.py: "What reuse mode does NOT isolate");
    # it lasts exactly one worker's runs, in the same sandbox.
    # A worker is its pid and start time: either alone can repeat (pids are reused; workers
    # forked within one 10 ms clock tick share a start time, which made this test flaky).
    plant = ("import os, sympy\nsympy.LEAK = getattr(sympy, 'LEAK', 0) + 1\n"
             "tick = open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19]\n"
             "print(f'{os.getpid()}@{tick}', sympy.LEAK)")  # one print: several get labelled
    seen = [(await _observe(refreshing_box, plant)).split() for _ in range(7)]
    assert [int(leak) for _, leak in seen] == [1, 2, 3, 1, 2, 3, 1]
    workers = [started for started, _ in seen]
    assert len(set(workers[:3])) == len(set(workers[3:6])) == 1 and len(set(workers[::3])) == 3
    assert refreshing_box.workers_started == 1  # no new sandbox: the supervisor forked the workers
    procs = "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))"
    assert await _observe(refreshing_box, procs) in ("2", "3")  # old workers reaped, none left


async def test_a_worker_low_on_cpu_budget_hands_over(refreshing_box: BwrapSandbox | DockerSandbox) -> None:
    # The lifetime RLIMIT_CPU is 1 + 2 x cpu_s seconds; a run that leaves less than cpu_s of it
    # makes the worker hand over to a fresh fork (a fresh budget) instead of risking SIGXCPU.
    first = await _observe(refreshing_box, PID)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 2.2:\n    pass\nprint('ok')"
    assert await _observe(refreshing_box, burn) == "ok"
    after = await _observe(refreshing_box, PID)
    assert after != first and await _observe(refreshing_box, PID) == after
    assert refreshing_box.workers_started == 1


async def test_a_stopped_supervisor_still_forks_the_next_worker(
        refreshing_box: BwrapSandbox | DockerSandbox) -> None:
    await _observe(refreshing_box, "print(1)")
    await _observe(refreshing_box, "print(2)")
    # The third run ends this worker; without the worker's SIGCONT on its way out, the stopped
    # supervisor would never fork the next one and every later run would time out.
    stop = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nprint(3)"
    assert await _observe(refreshing_box, stop) == "3"
    result = await refreshing_box.run("print(4)", timeout_s=5)
    assert (result.observation, result.timed_out) == ("4", False)
    assert refreshing_box.workers_started == 1
