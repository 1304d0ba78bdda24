#!/usr/bin/env bash
# Make the Docker sandbox backend runnable for the test suite, idempotently:
#   1) install Debian's docker.io (+ debootstrap, to build the image) when dockerd is absent;
#   2) start dockerd when no engine answers, and wait for it;
#   3) build the sandbox image once when it is missing (`python -m sandbox.image build`; the
#      image lives in /var/lib/docker, so later runs on the same machine reuse it).
# It NEVER fails the build: where Docker cannot run (no root, no apt, a kernel without
# cgroups/overlay, ...) it prints a loud banner and exits 0, and the Docker tests skip loudly.
#
# Usage: scripts/ensure_docker.sh [PYTHON]   (PYTHON defaults to .venv/bin/python, then python3)
set -u

PY="${1:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
LOG="${ALPHAMATH_DOCKERD_LOG:-/tmp/alphamath-dockerd.log}"

loud() {
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!!! DOCKER SANDBOX UNAVAILABLE: $*" >&2
  echo "!!! The Docker sandbox tests will be SKIPPED; the bubblewrap backend is still tested." >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  exit 0
}

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# 1) Packages. `docker` alone may be a bare client: the engine is what we need.
missing=""
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
if [ -n "$missing" ] && ! engine_answers; then
  echo "ensure_docker: installing Debian packages:$missing"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null; }; then
    loud "could not apt-get install$missing"
  fi
fi
command -v docker >/dev/null 2>&1 || loud "no docker client after installing docker.io"

# 2) The engine.
if ! engine_answers; then
  command -v dockerd >/dev/null 2>&1 || loud "no dockerd binary"
  echo "ensure_docker: starting dockerd (log: $LOG)"
  # setsid + nohup: the daemon outlives this script and make's process group.
  $SUDO setsid nohup dockerd >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    engine_answers && break
    sleep 0.5
  done
  engine_answers || loud "dockerd did not answer within 30 s; see $LOG: $(tail -n 5 "$LOG" 2>/dev/null | tr '\n' ' ')"
fi

# 3) The image (built once; `sandbox.image build` is itself idempotent).
if ! "$PY" -c "import sys; from sandbox.image import _main; sys.exit(_main(sys.argv[1:]))" check >/dev/null 2>&1; then
  echo "ensure_docker: building the sandbox image (once per machine, about a minute)"
  started=$(date +%s)
  "$PY" -c "import sys; from sandbox.image import _main; sys.exit(_main(sys.argv[1:]))" build || loud "building the sandbox image failed (see above)"
  echo "ensure_docker: image built in $(( $(date +%s) - started )) s"
fi
echo "ensure_docker: Docker engine up, image $("$PY" -c "import sys; from sandbox.image import _main; sys.exit(_main(sys.argv[1:]))" name) present"
exit 0
