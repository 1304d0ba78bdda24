"""The attack suite, run against EVERY backend (`any_box`): each attack ends in a clear
observation, the sandbox keeps serving, and the host is untouched."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.bwrap import timeout_message

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def observe(box: Sandbox, code: str, *, timeout_s: float = 20) -> str:
    result = await box.run(code, timeout_s=timeout_s)
    assert not result.timed_out, result
    return result.observation


async def still_serves(box: Sandbox) -> None:
    assert await observe(box, "print(6 * 7)") == "42"


# --- network --------------------------------------------------------------------------------


async def test_no_egress_to_a_public_address(any_box: Sandbox) -> None:
    # TEST-NET-1: never routed; the point is that the socket cannot even be attempted.
    out = await observe(any_box, "import socket\nsocket.create_connection(('192.0.2.1', 80), 2)")
    assert out.startswith("OSError:") and "timed out" not in out, out
    await still_serves(any_box)


async def test_no_connection_to_a_host_loopback_server(any_box: Sandbox) -> None:
    connected = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        out = await observe(any_box, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)")
    finally:
        server.close()
        await server.wait_closed()
    assert out.startswith(("ConnectionRefusedError:", "OSError:")), out
    assert not connected.is_set()
    await still_serves(any_box)


# --- host files and secrets -------------------------------------------------------------------


async def test_cannot_read_host_files(any_box: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    out = await observe(any_box, f"open({str(secret)!r}).read()")
    assert out.startswith(("FileNotFoundError:", "PermissionError:")), out
    out = await observe(any_box, "open('/etc/shadow').read()")
    assert out.startswith(("FileNotFoundError:", "PermissionError:")), out
    out = await observe(any_box, "open('/root/.bashrc').read()")
    assert out.startswith(("FileNotFoundError:", "PermissionError:")), out


async def test_host_environment_secrets_are_hidden(any_box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAMATH_TEST_SECRET", "hunter2")
    out = await observe(any_box, "import os\nprint(sorted(k for k in os.environ if 'SECRET' in k or 'TOKEN' in k))")
    assert out == "[]"


@pytest.mark.parametrize("path", ["/etc/alphamath_pwned", "/usr/alphamath_pwned", "/alphamath_pwned",
                                  "/dev/alphamath_pwned"])
async def test_cannot_write_outside_tmp(any_box: Sandbox, path: str) -> None:
    out = await observe(any_box, f"open({path!r}, 'w').write('x')")
    assert out.startswith(("OSError: [Errno 30]", "PermissionError:")), out
    assert not os.path.exists(path)
    assert await observe(any_box, "open('/tmp/ok', 'w').write('abc')") == "3"


# --- resource exhaustion ----------------------------------------------------------------------


async def test_fork_bomb(any_box: Sandbox) -> None:
    started = time.monotonic()
    result = await any_box.run("import os\nwhile True: os.fork()", timeout_s=10)
    assert time.monotonic() - started < 15
    assert result.observation.startswith(("BlockingIOError:", "TimeoutError:", "RuntimeError:")), result
    await still_serves(any_box)


@pytest.mark.parametrize("code", ["x = bytearray(4 * 10**9)",
                                  "x = []\nwhile True: x.append(bytearray(10**7))"])
async def test_memory_bomb(any_box: Sandbox, code: str) -> None:
    out = await observe(any_box, code, timeout_s=30)
    assert out.startswith(("MemoryError", "RuntimeError: sandbox process died (SIGKILL")), out
    await still_serves(any_box)


async def test_filling_tmp(any_box: Sandbox) -> None:
    # tmpfs is 8 MiB in TEST_LIMITS; RLIMIT_FSIZE is 16 MiB.
    out = await observe(any_box, "f = open('/tmp/big', 'wb')\nfor _ in range(64): f.write(b'x' * (1 << 20)); f.flush()")
    assert out.startswith("OSError: [Errno 28]"), out
    await still_serves(any_box)


@pytest.mark.parametrize(
    "code",
    [
        "while True: pass",
        "import time\ntime.sleep(1000)",
        # CPU burn in threads (the GIL serialises them, but the process stays busy).
        "import threading\ndef burn():\n    while True: pass\n"
        "ts = [threading.Thread(target=burn) for _ in range(8)]\n[t.start() for t in ts]\n[t.join() for t in ts]",
    ],
    ids=["infinite-loop", "sleep-past-timeout", "threads-burn-cpu"],
)
async def test_runs_past_the_timeout(any_box: Sandbox, code: str) -> None:
    started = time.monotonic()
    result = await any_box.run(code, timeout_s=2)
    assert time.monotonic() - started < 5
    assert result.timed_out and result.error == timeout_message(2)
    await still_serves(any_box)


async def test_100_mb_of_output(any_box: Sandbox) -> None:
    out = await observe(any_box, "print('x' * 10**8)", timeout_s=60)
    assert out == "x" * 250 + "..." + "x" * 249  # the printed newline is the 250th char, then stripped
    await still_serves(any_box)


# --- attacking the sandbox's own processes ---------------------------------------------------


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
async def test_killing_pid_1(any_box: Sandbox, sig: str) -> None:
    result = await any_box.run(f"import os, signal\nos.kill(1, signal.{sig})\nprint('alive')", timeout_s=10)
    # pid 1 of a pid namespace ignores signals it has no handler for; any outcome is an observation.
    assert result.observation, result
    await still_serves(any_box)


async def test_signalling_its_parent(any_box: Sandbox) -> None:
    result = await any_box.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('alive')",
                               timeout_s=10)
    assert result.observation, result
    await still_serves(any_box)


async def test_crashing_the_interpreter(any_box: Sandbox) -> None:
    out = await observe(any_box, "import ctypes\nctypes.string_at(0)")
    assert out == "RuntimeError: sandbox process died (SIGSEGV, signal 11)"
    await still_serves(any_box)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "prefix"),
    [
        ("print('\udcff')", ""),  # a lone surrogate: what non-UTF-8 bytes decode to
        ("print(1)\x00", ""),  # a NUL byte in the source
        ("import sys\nsys.stdout.buffer.write(b'\\xff\\x00\\xfe')", ""),  # binary on stdout
        ("import os\nos.write(1, b'\\xff\\x00\\xfe\\n{')\nprint('ok')", "ok"),  # binary on fd 1
    ],
    ids=["non-utf8", "nul-byte", "binary-stdout", "binary-fd1"],
)
async def test_bad_input_is_an_observation(any_box: Sandbox, code: str, prefix: str) -> None:
    result = await any_box.run(code, timeout_s=20)
    assert isinstance(result.observation, str) and not result.timed_out, result
    assert result.observation.startswith(prefix)
    await still_serves(any_box)


async def test_10_mb_of_code(any_box: Sandbox) -> None:
    code = "s = '" + "x" * (10 << 20) + "'\nprint(len(s))"
    assert await observe(any_box, code, timeout_s=60) == str(10 << 20)
    await still_serves(any_box)
