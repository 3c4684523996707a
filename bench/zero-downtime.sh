#!/usr/bin/env bash
# bench/zero-downtime.sh: does any request fail while the slots are redeployed and switched?
#
# A root with the built-in sample app (build command "sh -c 'echo build'"), both slots
# pushed, `bluegreen serve` running. wrk loads the front port for DURATION (default 70s,
# -t2 -c32 --latency) while, 5 s in and with PAUSE (default 3) seconds between them:
#   a push to the active slot, a push to the standby, five `bluegreen switch`,
#   `bluegreen rollback <standby>`, `bluegreen promote <active> <standby>`, a SIGHUP to serve.
# Printed: each step's exit code, time and outcome, then wrk's total requests, non-2xx,
# socket errors (connect, read, write, timeout) and p99. Target: no failure in >= 100,000.
# Usage: bench/zero-downtime.sh   (env: BLUEGREEN_BIN, DURATION=70s, PAUSE=3, KEEP_TMP=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM

need_tools wrk
bg_bin
DURATION="${DURATION:-70s}"
PAUSE="${PAUSE:-3}"
WORK="$(mktmp)"
ROOT="$WORK/root"
APP="$WORK/app"

make_root "$ROOT" "sh -c 'echo build'" "$BG sample-app"
make_app "$APP" "$ROOT"
commit_version "$APP" v1
git -C "$APP" push -q blue main 2>>"$WORK/push.log"
git -C "$APP" push -q green main 2>>"$WORK/push.log"
start_serve "$ROOT" "$WORK/serve.log"
wait_http "http://127.0.0.1:$FRONT/" 20
wait_http "http://127.0.0.1:$BLUE_PORT/" 20
wait_http "http://127.0.0.1:$GREEN_PORT/" 20

active() { "$BG" status --root "$ROOT" --json | jq -r '.active'; }
other() { [[ $1 == blue ]] && echo green || echo blue; }

STEPS=()
step() { # NAME CMD...: runs CMD, notes exit code, time, last output line and who answers the front
    local name="$1" t0 t1 rc=0 out
    shift
    t0=$(now)
    out=$("$@" 2>&1) || rc=$?
    t1=$(now)
    local front; front=$(curl -sS --max-time 2 "http://127.0.0.1:$FRONT/" 2>&1 | head -c 80 || true)
    STEPS+=("| $name | $rc | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') | $(tail -n1 <<<"$out" | tr '|' '/' | cut -c1-90) | ${front%$'\n'} |")
    echo "step $name: rc=$rc $(tail -n1 <<<"$out")" >&2
    sleep "$PAUSE"
}

wrk -t2 -c32 -d"$DURATION" --latency "http://127.0.0.1:$FRONT/" >"$WORK/wrk.txt" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")
T_START=$(now)
sleep 5

A=$(active); S=$(other "$A")
echo "active: $A, standby: $S" >&2
commit_version "$APP" v2
step "push to active ($A)" git -C "$APP" push "$A" main
commit_version "$APP" v3
step "push to standby ($S)" git -C "$APP" push "$S" main
for i in 1 2 3 4 5; do
    step "switch $i (from $(active))" "$BG" switch --root "$ROOT"
done
A=$(active); S=$(other "$A")
step "rollback $S" "$BG" rollback "$S" --root "$ROOT"
step "promote $A to $S" "$BG" promote "$A" "$S" --root "$ROOT"
step "SIGHUP serve" kill -HUP "$SERVE_PID"
T_STEPS=$(awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')

wait "$WRK_PID" || true
wrk_parse "$WORK/wrk.txt"
FAILED=$((W_NON2XX + W_CONNECT + W_READ + W_WRITE + W_TIMEOUT))
kill -0 "$SERVE_PID" 2>/dev/null || { echo "serve died" >&2; FAILED=$((FAILED + 1)); }

echo
echo "### zero-downtime.sh: wrk -t2 -c32 -d$DURATION on the front port, steps done in the first ${T_STEPS}s"
echo
echo "| step | exit | s | last output line | front answers after |"
echo "| --- | ---: | ---: | --- | --- |"
printf '%s\n' "${STEPS[@]}"
echo
echo "| total requests | non-2xx | connect err | read err | write err | timeouts | p50 ms | p99 ms | verdict |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
verdict=PASS
((FAILED == 0 && W_REQS >= 100000)) || verdict=FAIL
echo "| $W_REQS | $W_NON2XX | $W_CONNECT | $W_READ | $W_WRITE | $W_TIMEOUT | $W_P50 | $W_P99 | $verdict |"
[[ $verdict == PASS ]] || { echo; echo "serve log tail:"; tail -n 30 "$WORK/serve.log"; }
