#!/usr/bin/env bash
# `make test-images`: a private Docker engine (data and exec roots in a temporary directory, no
# bridge, no iptables), every image built in it, then the checks in tests/images through real
# containers with host networking. The engine is stopped by its PID and its mounts removed on
# any exit. Base tarballs and wheels are cached under $ZOO_CACHE between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Debian's docker CLI matches Debian's dockerd (20.10); a newer static CLI earlier on PATH
# would negotiate down, but one version on both ends is the tested pair.
if [ -x /usr/bin/docker ]; then export DOCKER=/usr/bin/docker; else export DOCKER=docker; fi
engine=$(mktemp -d /tmp/zoo-docker.XXXXXX)
stop_engine() {
  deploy/images/dockerd.sh stop "$engine" || true
  rm -rf "$engine"
}
trap stop_engine EXIT
# so that the EXIT trap runs on an interrupt too, saying which
trap 'echo "test-images: SIGINT" >&2; exit 130' INT
trap 'echo "test-images: SIGTERM" >&2; exit 143' TERM
export "$(deploy/images/dockerd.sh start "$engine")"
echo "test-images: dockerd $(cat "$engine/dockerd.pid") on $DOCKER_HOST"
started=$(date +%s)
make --no-print-directory images images-services DOCKER="$DOCKER"
if [ "${ZOO_GPU_IMAGES:-0}" = 1 ]; then
  make --no-print-directory images-gpu DOCKER="$DOCKER"
else
  echo "test-images: GPU images left out (several GB of CUDA wheels; ZOO_GPU_IMAGES=1 builds them)"
fi
echo "test-images: images built in $(($(date +%s) - started)) s"
"$DOCKER" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -v '<none>' | sort
.venv/bin/python -m pytest -m images tests/images -p no:cacheprovider -s "$@"
echo "test-images: done in $(($(date +%s) - started)) s"
