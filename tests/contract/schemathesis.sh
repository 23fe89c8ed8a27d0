#!/usr/bin/env bash
# tests/contract/schemathesis.sh — property-based tests of the live gateway
# against proto/openapi.yaml.
#
#   schemathesis.sh            runs both passes against the stack in $LINKTR_STACK_ENV
#   schemathesis.sh --install  only makes sure the virtual environment exists
#
# The gateway's URL comes from GATEWAY_URL, else from the stack.env file
# named by LINKTR_STACK_ENV (deploy/local/stack writes it). The stack must
# run with RATE_LIMITS=off, or the per-IP buckets answer 429 to most cases.
#
# Pass 1 runs every phase (examples, coverage, fuzzing, stateful) without
# credentials: the stateful phase follows the spec's links register → login
# → authenticated calls (the login's access token becomes the Authorization
# header). Pass 2 makes a fresh referrer with curl, one referred user who
# verifies their email through the mail the stack wrote to MAIL_DIR (so the
# referral converts and rewards are granted), logs the referrer in and runs
# again with its token on every request: every authenticated operation is
# fuzzed past the 401, on non-empty pages, and no operation may ignore auth.
# Any 5xx, undocumented status, wrong content type, body or required header
# fails the run (exit 1); a broken setup exits 2.
#
# The virtual environment lives in ${XDG_CACHE_HOME:-~/.cache}/linktr/
# venv-schemathesis and is made once from requirements.txt (every package
# pinned); later runs need no network.
#
# Environment (all optional):
#   LINKTR_SCHEMATHESIS_EXAMPLES   examples per operation and phase (default 30)
#   LINKTR_SCHEMATHESIS_SEED       a seed, to replay a run (default: random, printed)
#   LINKTR_SCHEMATHESIS_WORKERS    concurrent workers (default 1)
#   LINKTR_SCHEMATHESIS_REPORTS    directory for the JUnit reports (default ./schemathesis-report)
#   LINKTR_SCHEMATHESIS_VENV       the virtual environment (default above)
#   LINKTR_SCHEMATHESIS_EXTRA_CHECKS  more checks for both passes, comma-separated
#                                  (e.g. unsupported_method,use_after_free)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SPEC="$REPO/proto/openapi.yaml"
REQS="$HERE/requirements.txt"
VENV="${LINKTR_SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/linktr/venv-schemathesis}"
EXAMPLES="${LINKTR_SCHEMATHESIS_EXAMPLES:-30}"
# One worker: with more, hypothesis describes lambdas with ast.parse on several
# threads at once and CPython 3.11 fails that at random ("AST constructor
# recursion depth mismatch"), a tool error rather than a finding.
WORKERS="${LINKTR_SCHEMATHESIS_WORKERS:-1}"
REPORTS="${LINKTR_SCHEMATHESIS_REPORTS:-$PWD/schemathesis-report}"
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance
CHECKS=$CHECKS,response_schema_conformance,response_headers_conformance
CHECKS=$CHECKS${LINKTR_SCHEMATHESIS_EXTRA_CHECKS:+,$LINKTR_SCHEMATHESIS_EXTRA_CHECKS}

die() {
    echo "schemathesis.sh: $*" >&2
    exit 2
}

# Makes the venv unless it already holds exactly requirements.txt.
ensure_venv() {
    local stamp="$VENV/.linktr-requirements"
    if [[ -x "$VENV/bin/schemathesis" && -f "$stamp" ]] && cmp -s "$REQS" "$stamp"; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is missing (apt-get install python3 python3-venv)"
    echo "schemathesis.sh: installing schemathesis into $VENV (once)" >&2
    rm -rf -- "$VENV"
    mkdir -p -- "$(dirname -- "$VENV")"
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS" ||
        die "pip install -r $REQS failed (is the package registry reachable?)"
    cp -- "$REQS" "$stamp"
}

# stack_value KEY: KEY's value in the stack.env file, or nothing.
stack_value() {
    [[ -n "${LINKTR_STACK_ENV:-}" && -r "$LINKTR_STACK_ENV" ]] || return 0
    sed -n "s/^$1=//p" "$LINKTR_STACK_ENV" | tail -n 1
}

gateway_url() {
    if [[ -n "${GATEWAY_URL:-}" ]]; then
        printf '%s\n' "$GATEWAY_URL"
        return
    fi
    [[ -n "${LINKTR_STACK_ENV:-}" ]] || die "set GATEWAY_URL or LINKTR_STACK_ENV (a stack.env file)"
    [[ -r "$LINKTR_STACK_ENV" ]] || die "cannot read LINKTR_STACK_ENV=$LINKTR_STACK_ENV"
    local url
    url=$(stack_value GATEWAY_URL)
    [[ -n "$url" ]] || die "no GATEWAY_URL in $LINKTR_STACK_ENV"
    printf '%s\n' "$url"
}

# Waits up to 30 s for the gateway to say it is ready.
wait_ready() {
    local url=$1
    for _ in $(seq 1 60); do
        curl -fsS -o /dev/null --max-time 2 "$url/healthz" 2>/dev/null && return 0
        sleep 0.5
    done
    die "the gateway at $url is not up (GET /healthz)"
}

random_hex() {
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

# json_field KEY: prints a top-level string member of the JSON on stdin.
json_field() {
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# post PATH JSON WANT: POSTs JSON to the gateway, prints the body; dies unless the status is WANT.
post() {
    local body code
    body=$(curl -sS --max-time 20 -w '\n%{http_code}' -X POST "$BASE$1" \
        -H 'Content-Type: application/json' --data-binary "$2") || die "POST $1 failed"
    code=${body##*$'\n'}
    [[ "$code" == "$3" ]] || die "POST $1 answered $code, not $3: ${body%$'\n'*}"
    printf '%s\n' "${body%$'\n'*}"
}

# verify_by_mail EMAIL: finds the verification mail to EMAIL in MAIL_DIR and uses its token.
verify_by_mail() {
    local dir=$1 email=$2 token="" file
    for _ in $(seq 1 60); do
        file=$(grep -rlF -- "$email" "$dir" 2>/dev/null | head -n 1 || true)
        if [[ -n "$file" ]]; then
            token=$(grep -o 'verify-email?token=[A-Za-z0-9_-]*' "$file" | head -n 1 | cut -d= -f2)
            [[ -n "$token" ]] && break
        fi
        sleep 0.5
    done
    [[ -n "$token" ]] || die "no verification mail to $email in $dir after 30 s"
    post /api/verify-email/ "{\"token\":\"$token\"}" 200 >/dev/null
}

# Makes a referrer with one referred user (verified through the mail the
# stack wrote, when it writes mail to a directory) and prints the referrer's
# access token, so the authenticated pass sees non-empty referrals, stats
# and rewards.
seed_and_login() {
    local tag name pw user code mail_dir token
    tag=$(random_hex 5)
    name="contract_r_$tag"
    pw="Contract-$(random_hex 12)-pass"
    user=$(post /api/register/ \
        "{\"username\":\"$name\",\"email\":\"$name@example.com\",\"password\":\"$pw\"}" 201) || return 2
    code=$(printf '%s' "$user" | json_field referral_code) || die "no referral_code in $user"
    post /api/register/ "{\"username\":\"contract_e_$tag\",\"email\":\"contract_e_$tag@example.org\",\
\"password\":\"Referred-$(random_hex 12)-pass\",\"referral_code\":\"$code\"}" 201 >/dev/null ||
        return 2
    token=$(post /api/login/ "{\"username_or_email\":\"$name\",\"password\":\"$pw\"}" 200 |
        json_field access) || die "POST /api/login/ gave no access token"
    mail_dir=${MAIL_DIR:-$(stack_value MAIL_DIR)}
    if [[ -n "$mail_dir" ]]; then
        verify_by_mail "$mail_dir" "contract_e_$tag@example.org" || return 2
        wait_converted "$token" || return 2
    fi
    printf '%s\n' "$token"
}

# wait_converted TOKEN: waits up to 20 s for the referral service to count the success.
wait_converted() {
    for _ in $(seq 1 40); do
        curl -sS --max-time 5 "$BASE/api/referral-stats/" -H "Authorization: Bearer $1" |
            grep -q '"successful":1' && return 0
        sleep 0.5
    done
    die "the verified referral did not become successful within 20 s (GET /api/referral-stats/)"
}

# run_pass NAME [schemathesis options...]: one schemathesis run; returns its status.
run_pass() {
    local name=$1
    shift
    local seed=()
    [[ -n "${LINKTR_SCHEMATHESIS_SEED:-}" ]] && seed=(--seed "$LINKTR_SCHEMATHESIS_SEED")
    echo "==== schemathesis: $name ===="
    "$VENV/bin/schemathesis" run "$SPEC" --url "$BASE" \
        --max-examples "$EXAMPLES" --workers "$WORKERS" "${seed[@]}" \
        --request-timeout 15 --generation-database none --no-color \
        --report junit --report-junit-path "$REPORTS/$name.xml" "$@"
}

main() {
    [[ -r "$SPEC" ]] || die "missing $SPEC"
    ensure_venv
    [[ "${1:-}" == --install ]] && return 0
    [[ $# -eq 0 ]] || die "unknown argument: $1"
    BASE=$(gateway_url)
    BASE=${BASE%/}
    wait_ready "$BASE"
    mkdir -p -- "$REPORTS"
    local status=0 token
    run_pass anonymous --checks "$CHECKS" || status=1
    token=$(seed_and_login) || exit 2
    run_pass authenticated --checks "$CHECKS,ignored_auth" \
        --header "Authorization: Bearer $token" || status=1
    if [[ $status -ne 0 ]]; then
        echo "schemathesis.sh: findings above (reports in $REPORTS)" >&2
    fi
    return $status
}

main "$@"
