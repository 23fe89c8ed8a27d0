#!/usr/bin/env bash
# stack_ctrl_c_leaves_nothing: `deploy/local/stack run`, interrupted the way
# a terminal's Ctrl-C does it (SIGINT to its whole process group), stops
# every process it started and exits 0.
#
# Environment: LINKTR_BUILD_DIR (the build with bin/linktr-*) and
# LINKTR_RUN_DIR (a run dir of this test's own; it is wiped first).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STACK=$HERE/../../deploy/local/stack
: "${LINKTR_BUILD_DIR:?set LINKTR_BUILD_DIR}" "${LINKTR_RUN_DIR:?set LINKTR_RUN_DIR}"
RUN_DIR=$(realpath -m -- "$LINKTR_RUN_DIR")
export LINKTR_RUN_DIR=$RUN_DIR
OUT=$RUN_DIR.out
ERR=$RUN_DIR.err

fail() {
  echo "FAIL: $*" >&2
  echo "--- stack stdout:" >&2
  cat "$OUT" >&2 2>/dev/null || true
  echo "--- stack stderr:" >&2
  cat "$ERR" >&2 2>/dev/null || true
  exit 1
}

# Whatever happens, leave nothing running behind this test.
cleanup() {
  "$STACK" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Succeeds if process $1 exists and is not a zombie.
running() {
  local state
  state=$(awk '{print $3}' 2>/dev/null <"/proc/$1/stat") || return 1
  [[ $state != Z ]]
}

# Prints the pids the stack recorded, and PostgreSQL's postmaster.
recorded_pids() {
  local f
  for f in "$RUN_DIR"/pids/*.pid; do
    [[ -f $f ]] && head -n 1 "$f"
  done
  [[ -f $RUN_DIR/pg/pgdata/postmaster.pid ]] && head -n 1 "$RUN_DIR/pg/pgdata/postmaster.pid"
  return 0
}

# Prints the live processes (other than this test) whose command line
# mentions the run dir.
strays() {
  local pid
  for pid in $(pgrep -f -- "$RUN_DIR" || true); do
    [[ $pid != "$$" ]] && running "$pid" && echo "$pid $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")"
  done
  return 0
}

wait_for_ready() {
  local i
  for ((i = 0; i < 900; i++)); do
    grep -q '^linktr ready: ' "$OUT" 2>/dev/null && return 0
    running "$1" || fail "stack run exited before it was ready"
    sleep 0.1
  done
  fail "stack run was not ready within 90 s"
}

main() {
  local stack_pid pids i status=0 pid left=()
  mkdir -p "$(dirname "$RUN_DIR")"
  "$STACK" stop >/dev/null 2>&1 || true
  # Empty the capture files here: the redirections below happen in the
  # background child, and a ready line left by an earlier run must not be
  # read before the child has truncated the file.
  : >"$OUT"
  : >"$ERR"
  # Job control gives `stack run` a process group of its own, as a shell
  # does, and keeps SIGINT from being ignored in a background job.
  set -m
  "$STACK" run --free-ports --clean >"$OUT" 2>"$ERR" &
  stack_pid=$!
  set +m
  wait_for_ready "$stack_pid"
  [[ $(grep -c . "$OUT") -eq 1 ]] || fail "stack run printed more than the ready line"
  pids=$(recorded_pids)
  [[ $(wc -w <<<"$pids") -ge 5 ]] || fail "expected at least 5 recorded pids, got: $pids"

  kill -INT -- "-$stack_pid"
  for ((i = 0; i < 600; i++)); do
    running "$stack_pid" || break
    sleep 0.1
  done
  running "$stack_pid" && fail "stack run still running 60 s after SIGINT"
  wait "$stack_pid" || status=$?
  [[ $status -eq 0 ]] || fail "stack run exited with status $status after SIGINT"

  for pid in $pids $stack_pid; do
    running "$pid" && left+=("$pid")
  done
  ((${#left[@]} == 0)) || fail "still alive after Ctrl-C: ${left[*]}"
  [[ -z $(strays) ]] || fail "processes mentioning $RUN_DIR still alive: $(strays)"
  [[ ! -e $RUN_DIR/stack.env ]] || fail "stack.env left behind"
  echo "ok: stack run stopped $(wc -w <<<"$pids") processes on SIGINT and exited 0"
}

main "$@"
