#!/bin/sh
# A private Docker engine for the image tests: dockerd.sh start DIR | stop DIR
# Its data and exec roots and its socket live in DIR, it makes no bridge and touches no
# iptables (every container runs with host networking), and `stop` ends it by its PID and
# unmounts what it left under DIR. `start` prints the DOCKER_HOST to export.
set -eu
cmd=$1 dir=$2
case "$cmd" in
start)
  mkdir -p "$dir"
  # its own session: nothing the engine or its containers' shims signal reaches the caller
  setsid dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
    -H "unix://$dir/docker.sock" --bridge=none --iptables=false --ip-masq=false \
    --storage-driver=overlay2 >"$dir/dockerd.log" 2>&1 &
  i=0
  until DOCKER_HOST="unix://$dir/docker.sock" "${DOCKER:-docker}" version >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then tail -20 "$dir/dockerd.log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "DOCKER_HOST=unix://$dir/docker.sock"
  ;;
stop)
  if [ -s "$dir/dockerd.pid" ]; then
    pid=$(cat "$dir/dockerd.pid")
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 60 ]; do i=$((i + 1)); sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Mounts dockerd left behind (overlay layers, shm, netns), deepest first.
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ;;
*) echo "usage: dockerd.sh start|stop DIR" >&2; exit 2 ;;
esac
