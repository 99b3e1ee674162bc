#!/usr/bin/env bash
# Build the minisir image with BuildKit (only the chosen flavor's stages are built).
# Everything below is optional; the plain call builds minisir:cpu from the Dockerfile's defaults.
#   FLAVOR=cpu|cuda  which image (default cpu)          TAG   image tag (default minisir:$FLAVOR)
#   CPU_BASE         base image of the CPU flavor, e.g. a local debootstrap import when the
#                    default base image cannot be pulled
#   CA_BUNDLE        CA bundle for pip inside the build, when TLS goes through a local CA
#   WHEELHOUSE       a directory of wheels pip may use inside the build (for example the CPU-only
#                    torch wheel this machine's pip installs); it is served on localhost for the build
#   DOCKER           the docker client (default: docker); BuildKit needs `docker buildx` or a
#                    client that still has the built-in builder (DOCKER_BUILDKIT=1)
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOR=${FLAVOR:-cpu}
TAG=${TAG:-minisir:$FLAVOR}
DOCKER=${DOCKER:-docker}

if "$DOCKER" buildx version >/dev/null 2>&1; then
  BUILD=("$DOCKER" buildx build --load)
elif [ "$DOCKER" = docker ] && [ -x /usr/bin/docker ] && [ "$(command -v docker)" != /usr/bin/docker ] \
     && DOCKER_BUILDKIT=1 /usr/bin/docker build --help >/dev/null 2>&1; then
  BUILD=(/usr/bin/docker build)  # distribution client with the built-in BuildKit builder
else
  BUILD=("$DOCKER" build)
fi
export DOCKER_BUILDKIT=1

ARGS=(--build-arg "FLAVOR=$FLAVOR" --network host -t "$TAG")
[ -n "${CPU_BASE:-}" ] && ARGS+=(--build-arg "CPU_BASE=$CPU_BASE")
if [ -n "${CA_BUNDLE:-}" ]; then
  [ -s "$CA_BUNDLE" ] || { echo "[docker-build] CA_BUNDLE=$CA_BUNDLE is not a readable file" >&2; exit 2; }
  ARGS+=(--secret "id=ca_bundle,src=$CA_BUNDLE")
fi
if [ -n "${WHEELHOUSE:-}" ]; then
  [ -d "$WHEELHOUSE" ] || { echo "[docker-build] WHEELHOUSE=$WHEELHOUSE is not a directory" >&2; exit 2; }
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WHEELHOUSE" >/dev/null 2>&1 &
  SERVER=$!
  trap 'kill "$SERVER" 2>/dev/null || true' EXIT
  ARGS+=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$PORT/")
fi
echo "[docker-build] ${BUILD[*]} ${ARGS[*]} ."
"${BUILD[@]}" "${ARGS[@]}" .
