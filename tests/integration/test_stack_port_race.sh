#!/usr/bin/env bash
# stack_port_race_chooses_again: `deploy/local/stack start --free-ports` whose
# first choice of ports loses one of them to another program before the
# service binds it (here: this test holds it) tears that attempt down,
# chooses again and comes up; nothing of the lost attempt keeps running.
#
# The collision is forced through the script's test seam
# LINKTR_STACK_TEST_FIRST_PORTS (the ports the first attempt takes).
#
# Environment: LINKTR_BUILD_DIR (the build with bin/linktr-*) and
# LINKTR_RUN_DIR (a run dir of this test's own; it is wiped first).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STACK=$HERE/../../deploy/local/stack
: "${LINKTR_BUILD_DIR:?set LINKTR_BUILD_DIR}" "${LINKTR_RUN_DIR:?set LINKTR_RUN_DIR}"
RUN_DIR=$(realpath -m -- "$LINKTR_RUN_DIR")
export LINKTR_RUN_DIR=$RUN_DIR
ERR=$RUN_DIR.err
HOLDER=

fail() {
  echo "FAIL: $*" >&2
  echo "--- stack stderr:" >&2
  cat "$ERR" >&2 2>/dev/null || true
  exit 1
}

cleanup() {
  "$STACK" stop >/dev/null 2>&1 || true
  [[ -z $HOLDER ]] || kill "$HOLDER" 2>/dev/null || true
}
trap cleanup EXIT

# Prints N distinct loopback ports that are free now, outside the kernel's
# ephemeral range (as the script's own helper draws them).
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
want = int(sys.argv[1])
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    lo, hi = (int(x) for x in f.read().split())
pool = [p for p in range(10000, 65536) if not lo <= p <= hi]
chosen, socks = [], []
while len(chosen) < want:
    p = random.choice(pool)
    if p in chosen:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    socks.append(s)
    chosen.append(p)
print(" ".join(map(str, chosen)))
EOF
}

# Succeeds if something listens on 127.0.0.1:$1.
listening() {
  python3 -c 'import socket, sys; s = socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))))' "$1"
}

main() {
  local ports held port status=0 final gateway i
  mkdir -p "$(dirname "$RUN_DIR")"
  "$STACK" stop >/dev/null 2>&1 || true
  # Four instances: two ports each, PostgreSQL's and a spare (choose_ports).
  read -r -a ports <<<"$(free_ports 10)"
  held=${ports[0]}
  # The other program: it listens on the first instance's port for the whole test.
  python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8); time.sleep(600)' "$held" &
  HOLDER=$!
  for ((i = 0; i < 100; i++)); do
    listening "$held" && break
    sleep 0.05
  done
  listening "$held" || fail "the holder does not listen on $held"

  LINKTR_STACK_TEST_FIRST_PORTS="${ports[*]}" "$STACK" start --free-ports --clean \
    >/dev/null 2>"$ERR" || status=$?
  [[ $status -eq 0 ]] || fail "stack start exited $status"
  grep -q 'a port chosen for this stack was taken before it was bound' "$ERR" \
    || fail "the first attempt did not see the port race"
  grep -q 'choosing the ports again (attempt 2)' "$ERR" || fail "no second attempt"
  "$STACK" status >/dev/null || fail "stack status after the retry"
  gateway=$(grep '^GATEWAY_URL=' "$RUN_DIR/stack.env" | cut -d= -f2-)
  curl -fsS -o /dev/null --max-time 5 "$gateway/healthz" || fail "the gateway does not answer"
  # Nothing of the first attempt still listens on its ports, unless the second
  # attempt drew the same port again; the holder keeps its own.
  final=" $(cut -d= -f2 "$RUN_DIR/ports.env" | tr '\n' ' ') "
  for port in "${ports[@]:1}"; do
    [[ $final == *" $port "* ]] && continue
    listening "$port" && fail "port $port of the lost attempt is still in use"
  done
  [[ $final != *" $held "* ]] || fail "the second attempt took the held port $held"
  echo "ok: the first attempt lost port $held, the second came up on other ports"
}

main "$@"
