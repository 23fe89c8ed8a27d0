# bench/lib.sh — shared by bench/auth, bench/referral and bench/gateway
# (sourced, not run). Each script starts its own stack on free ports with
# RATE_LIMITS=off, takes every number in one run (the machine is shared, so
# only numbers from the same run compare), and leaves no process behind.
#
# After bench_start NAME: the stack.env keys (GATEWAY_URL, AUTH_URL,
# REFERRAL_URL, ADMIN_DATABASE_URL, ...) are shell variables, BENCH_DIR is
# the run directory, BENCH_HERE the bench/ directory. bench_wrk sets
# WRK_RPS, WRK_P50, WRK_P99 (milliseconds), WRK_ERRS (non-2xx + socket
# errors) and WRK_REQS; bench_sample_* measure one process.
# shellcheck shell=bash

BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_ROOT=$(cd "$BENCH_HERE/.." && pwd)
BENCH_SAMPLER_PID=
BENCH_SAMPLER_OUT=

bench_die() {
    echo "bench: $*" >&2
    exit 1
}

# Stops what this script started: the RSS sampler and the stack.
bench_cleanup() {
    if [ -n "$BENCH_SAMPLER_PID" ]; then
        kill "$BENCH_SAMPLER_PID" 2>/dev/null || true
        wait "$BENCH_SAMPLER_PID" 2>/dev/null || true
        BENCH_SAMPLER_PID=
    fi
    "$BENCH_ROOT/deploy/local/stack" stop >/dev/null 2>&1 || true
}

# bench_start NAME: starts a fresh stack in $LINKTR_RUN_DIR (default
# <build>/bench-NAME) and loads its stack.env.
bench_start() {
    local name=$1
    command -v wrk >/dev/null || bench_die "wrk is missing (apt-get install wrk)"
    command -v psql >/dev/null || bench_die "psql is missing (apt-get install postgresql-client)"
    export LINKTR_BUILD_DIR=${LINKTR_BUILD_DIR:-$BENCH_ROOT/build}
    export LINKTR_RUN_DIR=${LINKTR_RUN_DIR:-$LINKTR_BUILD_DIR/bench-$name}
    export RATE_LIMITS=off
    BENCH_DIR=$LINKTR_RUN_DIR
    mkdir -p "$BENCH_DIR"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    "$BENCH_ROOT/deploy/local/stack" start --free-ports --clean >/dev/null ||
        bench_die "the stack did not start (logs in $BENCH_DIR/logs)"
    # shellcheck disable=SC1091
    . "$BENCH_DIR/stack.env"
}

# bench_pid NAME: the pid of a stack instance (first line of pids/NAME.pid).
bench_pid() {
    head -n1 "$BENCH_DIR/pids/$1.pid"
}

# bench_post PATH JSON: POSTs JSON to the gateway; prints the body; fails on non-2xx.
bench_post() {
    curl -sf "$GATEWAY_URL$1" -H 'Content-Type: application/json' -d "$2"
}

# bench_json_field NAME: the first string value of "NAME" in JSON on stdin.
bench_json_field() {
    sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" | head -n1
}

# bench_register USER PASSWORD: registers USER (USER@example.com); prints its id.
bench_register() {
    local body
    body=$(printf '{"username":"%s","email":"%s@example.com","password":"%s"}' "$1" "$1" "$2")
    bench_post /api/register/ "$body" | bench_json_field id
}

# bench_login_body USER PASSWORD: the JSON body of a login.
bench_login_body() {
    printf '{"username_or_email":"%s","password":"%s"}' "$1" "$2"
}

# bench_logins USER PASSWORD COUNT FIELD: logs in COUNT times (4 at once,
# each answer in its own file, failed ones retried twice), printing FIELD
# ("access" or "refresh") of each answer, one per line.
bench_logins() {
    local body dir=$BENCH_DIR/logins _
    body=$(bench_login_body "$1" "$2")
    rm -rf "$dir"
    mkdir -p "$dir"
    for _ in 1 2 3; do
        seq "$3" | while read -r i; do [ -s "$dir/$i" ] || echo "$i"; done |
            xargs -r -P4 -I{} curl -sf -o "$dir/{}" "$GATEWAY_URL/api/login/" \
                -H 'Content-Type: application/json' -d "$body" || true
    done
    find "$dir" -type f -size +0 -exec awk -v f="\"$4\"" '{
        i = index($0, f); if (!i) next
        rest = substr($0, i + length(f)); sub(/^: *"/, "", rest); sub(/".*/, "", rest)
        print rest }' {} +
}

# Latency as wrk prints it (250.00us, 1.20ms, 2.00s) in milliseconds.
bench_to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# bench_wrk CONNECTIONS SECONDS URL [LUA [ENV=VALUE...]]: runs wrk with 2
# threads; sets WRK_RPS, WRK_P50, WRK_P99 (ms), WRK_ERRS, WRK_REQS.
bench_wrk() {
    local conns=$1 secs=$2 url=$3 script=${4:-}
    shift 4 2>/dev/null || shift $#
    local args=(-t2 -c"$conns" -d"${secs}s" --latency --timeout 10s)
    [ -n "$script" ] && args+=(-s "$script")
    local out
    out=$(env "$@" wrk "${args[@]}" "$url") || bench_die "wrk failed against $url"
    WRK_RPS=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    WRK_REQS=$(awk '/requests in/ {print $1}' <<<"$out")
    WRK_P50=$(bench_to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    WRK_P99=$(bench_to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    local non2xx sock
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    sock=$(awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' <<<"$out")
    WRK_ERRS=$((${non2xx:-0} + ${sock:-0}))
    if [ "$WRK_REQS" -gt 0 ] && [ $((WRK_ERRS * 100)) -gt "$WRK_REQS" ]; then
        echo "bench: warning: $WRK_ERRS of $WRK_REQS requests to $url failed" >&2
    fi
}

# bench_cpu_ticks PID: utime + stime of PID in clock ticks.
bench_cpu_ticks() {
    # Fields after the ")" that closes comm: state is $1, utime $12, stime $13.
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# bench_cpu_ticks_sum PID...: bench_cpu_ticks summed over the processes (0 for one that is gone).
bench_cpu_ticks_sum() {
    local t=0 p
    for p in "$@"; do
        t=$((t + $(bench_cpu_ticks "$p" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# bench_pg_ticks: CPU ticks of every process of the stack's PostgreSQL (postmaster and children).
bench_pg_ticks() {
    # shellcheck disable=SC2046 # a list of pids
    bench_cpu_ticks_sum $(bench_pg_pids)
}

# bench_ctx_switches PID...: context switches (voluntary and not) summed over every thread of each PID.
bench_ctx_switches() {
    local p
    for p in "$@"; do
        cat /proc/"$p"/task/*/status 2>/dev/null
    done | awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}'
}

# bench_pg_pids: the stack's PostgreSQL processes (postmaster and children).
bench_pg_pids() {
    local pm
    pm=$(head -n1 "$(find -L "$BENCH_DIR" -name postmaster.pid | head -n1)")
    echo "$pm" $(pgrep -P "$pm")
}

# bench_now: wall clock in seconds with nanoseconds.
bench_now() {
    date +%s.%N
}

# bench_cpu_share TICKS0 TICKS1 T0 T1: the CPU share (percent of all cores).
bench_cpu_share() {
    awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" \
        'BEGIN {printf "%.1f", 100 * (b - a) / hz / ((t1 - t0) * n)}'
}

# bench_kib PID FIELD: a /proc/PID/status field (VmRSS, VmHWM) in KiB.
bench_kib() {
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}

# bench_sample_start PID: samples PID's VmRSS every 100 ms in the
# background until bench_sample_stop, which prints the largest (KiB).
bench_sample_start() {
    BENCH_SAMPLER_OUT=$BENCH_DIR/rss-samples
    local pid=$1
    (
        max=0
        while [ -r "/proc/$pid/status" ]; do
            v=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            if [ "${v:-0}" -gt "$max" ]; then
                max=$v
                echo "$max" >"$BENCH_SAMPLER_OUT.tmp" && mv "$BENCH_SAMPLER_OUT.tmp" "$BENCH_SAMPLER_OUT"
            fi
            sleep 0.1
        done
    ) &
    BENCH_SAMPLER_PID=$!
}

bench_sample_stop() {
    kill "$BENCH_SAMPLER_PID" 2>/dev/null || true
    wait "$BENCH_SAMPLER_PID" 2>/dev/null || true
    BENCH_SAMPLER_PID=
    cat "$BENCH_SAMPLER_OUT" 2>/dev/null || echo 0
}

# bench_hash_counters: auth's argon2id pool counters from its admin port,
# "JOBS CPU_SECONDS" (linktr_hashpool_jobs_total, linktr_hashpool_cpu_seconds_total).
bench_hash_counters() {
    curl -sf "$AUTH_ADMIN_URL/metrics" | awk '
        $1 == "linktr_hashpool_jobs_total" {j = $2}
        $1 == "linktr_hashpool_cpu_seconds_total" {c = $2}
        END {if (j == "" || c == "") exit 1; print j, c}' ||
        bench_die "no linktr_hashpool counters at $AUTH_ADMIN_URL/metrics"
}

# bench_hash_idle: waits (at most 10 s) until auth's argon2id pool has no job
# queued or running: wrk abandons the requests in flight when it stops, and
# auth still hashes them.
bench_hash_idle() {
    local prev="" now _
    for _ in $(seq 100); do
        now=$(bench_hash_counters)
        [ "$now" = "$prev" ] && return 0
        prev=$now
        sleep 0.1
    done
}

# bench_hash_ms "JOBS0 CPU0" "JOBS1 CPU1": the mean CPU milliseconds of one
# argon2id between two bench_hash_counters readings ("n/a" without a job).
bench_hash_ms() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        if (y[1] - x[1] <= 0) print "n/a"; else printf "%.2f", 1000 * (y[2] - x[2]) / (y[1] - x[1]) }'
}

# bench_host_ticks: "BUSY IDLE IRQ" clock ticks of all cores from /proc/stat
# (busy: user, nice, system, irq, softirq, steal; idle: idle and iowait;
# irq: interrupts and softirqs, which no process is charged for, such as
# loopback TCP's receive side when it runs outside a system call).
bench_host_ticks() {
    awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6, $7 + $8; exit}' /proc/stat
}

# bench_mib KIB: KiB as MiB with one decimal.
bench_mib() {
    awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'
}

# bench_ratio A B: A / B with three decimals.
bench_ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "n/a"; else printf "%.3f", a / b}'
}

# bench_row NAME: one table row from the last bench_wrk.
bench_row() {
    printf '%-22s %10s %9s %9s %8s\n' "$1" "$WRK_RPS" "$WRK_P50" "$WRK_P99" "$WRK_ERRS"
}

bench_header() {
    printf '%-22s %10s %9s %9s %8s\n' scenario "req/s" "p50 ms" "p99 ms" errors
}
