#!/usr/bin/env bash
# `make demo` from nothing, timed: bench/install_time.sh [--cold] [make args, e.g. INSTALLER=pip]
#
# Clones this repository's HEAD into a temp dir (no .venv), runs `make demo` there and prints the wall time of each
# recipe line and the total. --cold points pip's and uv's caches at empty folders first (every wheel downloaded);
# without it the user's caches are used, as a second checkout on the same machine would. Nothing here is touched.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ "${1:-}" = "--cold" ]; then
  shift
  mkdir -p "$work/pip-cache" "$work/uv-cache"
  export PIP_CACHE_DIR="$work/pip-cache" UV_CACHE_DIR="$work/uv-cache"
fi
cat > "$work/timed-sh" <<'SH'
#!/usr/bin/env bash
s=$(date +%s.%N); /bin/bash "$@"; rc=$?; e=$(date +%s.%N)
printf '%8.1f s  %s\n' "$(echo "$e - $s" | bc)" "$(echo "${@: -1}" | head -c 100)" >&2; exit $rc
SH
chmod +x "$work/timed-sh"
git clone -q "$repo" "$work/repo"
cd "$work/repo"
start=$(date +%s.%N)
rc=0
make demo SHELL="$work/timed-sh" "$@" > "$work/make.log" 2>&1 || rc=$?
grep -E '^ +[0-9.]+ s  |setup|done:' "$work/make.log" || true
printf '%8.1f s  total, exit %s (load average at the end: %s)\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$rc" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
# CPU seconds of everything make ran (user + sys): what the wall time comes to on an otherwise idle machine
# (plus downloads), since the wall time above stretches with whatever else the machine is doing
times > "$work/times"  # not in $(...): a subshell would report its own (empty) children
cpu=$(tail -1 "$work/times" | awk '{ split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
printf '%8.1f s  CPU (user + sys) of all of it\n' "$cpu"
cd /
[ "$rc" = 0 ] || tail -30 "$work/make.log"
exit "$rc"
