"""Build the Docker sandbox image locally: no registry is reachable, so nothing is pulled.

`build_image()` debootstraps a minimal Debian bookworm with python3, sympy, numpy and scipy,
trims it (apt lists, docs, locales) and pipes it into `docker import` as `IMAGE`. It is
idempotent: an existing image is kept unless `force=True`. Bump `IMAGE_VERSION` whenever the
recipe changes, so every machine rebuilds once.

    python -m sandbox.image build [--force]   build (once)
    python -m sandbox.image check             exit 0 when the engine answers and the image exists
    python -m sandbox.image name              print the image name

(`cli.py sandbox build` calls `build_image`.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

__all__ = ["IMAGE", "IMAGE_VERSION", "build_image", "image_exists", "engine_answers"]

IMAGE_VERSION = "1"
IMAGE = f"alphamath-sandbox:{IMAGE_VERSION}"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-sympy", "python3-numpy", "python3-scipy")
BUILD_COMMAND = "python cli.py sandbox build"
_TRIM = ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale",
         "usr/share/info", "var/log")


def engine_answers(timeout_s: float = 5.0) -> bool:
    """True when a Docker engine answers a ping (docker SDK; never raises)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def image_exists(image: str = IMAGE) -> bool:
    """True when the engine answers and has `image` (never raises)."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            return any(image in (img.tags or []) for img in client.images.list(name=image.split(":")[0]))
        finally:
            client.close()
    except Exception:
        return False


def build_image(image: str = IMAGE, *, force: bool = False, mirror: str | None = None) -> bool:
    """Build `image` unless it exists (or `force`); True when a build ran.

    Needs root (debootstrap), the `debootstrap` and `docker` commands and a running engine.
    Raises RuntimeError with the reason and the fix when a step fails.
    """
    if not force and image_exists(image):
        return False
    for tool, package in (("debootstrap", "debootstrap"), ("docker", "docker.io")):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` not found: run `apt-get install -y {package}`")
    if not engine_answers():
        raise RuntimeError("no Docker engine answers: start one with `dockerd &` (as root)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alphamath-image-") as tmp:
        root = os.path.join(tmp, "root")
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, root]
        if mirror:
            argv.append(mirror)
        _run(argv, "debootstrap")
        for path in _TRIM:
            shutil.rmtree(os.path.join(root, path), ignore_errors=True)
            os.makedirs(os.path.join(root, path), exist_ok=True)
        # Byte-compile now: the root filesystem is read-only at run time (and runs use -B).
        subprocess.run(["chroot", root, "python3", "-m", "compileall", "-q", "-j0", "/usr/lib/python3"],
                       check=False, capture_output=True)
        tar = subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            _run(["docker", "import",
                  "--change", "LABEL alphamath.sandbox.image=" + IMAGE_VERSION,
                  "--change", 'CMD ["/usr/bin/python3"]',
                  "-", image], "docker import", stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
    print(f"built {image} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return True


def _run(argv: list[str], what: str, stdin: object = None) -> None:
    result = subprocess.run(argv, stdin=stdin, capture_output=True, text=True, check=False)  # type: ignore[call-overload]
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip()[-2000:]
        raise RuntimeError(f"{what} failed (exit code {result.returncode}): {detail}")


def _main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    if command == "name":
        print(IMAGE)
        return 0
    if command == "check":
        return 0 if image_exists() else 1
    if command == "build":
        try:
            built = build_image(force="--force" in argv)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{IMAGE} {'built' if built else 'already present'}")
        return 0
    print("usage: python -m sandbox.image build [--force] | check | name", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
