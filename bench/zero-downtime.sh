#!/usr/bin/env bash
# bench/zero-downtime.sh: does any request fail while the slots are redeployed and switched?
#
# A root with the built-in sample app (build command "sh -c 'echo build'"), both slots
# pushed, `bluegreen serve` running. wrk loads the front port for DURATION (default 70s,
# -t2 -c32 --latency) while, 5 s in and with PAUSE (default 3) seconds between them:
#   a push to the active slot, a push to the standby, five `bluegreen switch`,
#   `bluegreen rollback <standby>`, `bluegreen promote <active> <standby>`, a SIGHUP to serve,
#   and two restarts of serve under socket activation (bench/socket-holder.py holds the
#   listening sockets, as systemd does for systemd/bluegreen.socket).
# Printed: each step's exit code, time and outcome, then wrk's total requests, non-2xx,
# socket errors (connect, read, write, timeout) and p99, and the count per status code
# (bench/status-count.lua) with one non-2xx body. Target: no failure in >= 100,000.
# (A request stuck past the end of the run is in no wrk count: a stuck one shows up here
# when its generation's drain_timeout ends it with a 502.)
# APP=nginx runs the same steps with nginx as the app (each generation an nginx answering
# "<VERSION> from <slot>"), to tell the proxy's behaviour from the sample app's.
# Usage: bench/zero-downtime.sh   (env: BLUEGREEN_BIN, DURATION=70s, PAUSE=3, APP=sample|nginx, KEEP_TMP=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM

APP_KIND="${APP:-sample}"
need_tools wrk jq
[[ $APP_KIND != nginx ]] || need_tools nginx
bg_bin
DURATION="${DURATION:-70s}"
PAUSE="${PAUSE:-3}"
mktmp WORK
ROOT="$WORK/root"
APP="$WORK/app"

if [[ $APP_KIND == nginx ]]; then
    # one nginx per generation, on its {port}, answering "<VERSION> from <slot>"
    N="$WORK/nginx"
    mkdir -p "$N"
    cat >"$N/app.conf.tmpl" <<EOF
worker_processes 1;
pid $N/@PORT@.pid;
error_log $N/@PORT@.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    $(nginx_temp_paths "$N")
    server { listen 127.0.0.1:@PORT@; location / { default_type text/plain; return 200 "@BODY@\n"; } }
}
EOF
    # bluegreen fills $PORT and $SLOT; $(cat VERSION) is left to sh (run in the release folder)
    APP_CMD="sh -c 'sed -e s/@PORT@/\$PORT/g -e \"s/@BODY@/\$(cat VERSION) from \$SLOT/\" $N/app.conf.tmpl > $N/\$PORT.conf && exec nginx -e $N/\$PORT.err -c $N/\$PORT.conf -g \"daemon off;\"'"
else
    APP_CMD="$BG sample-app"
fi
make_root "$ROOT" "sh -c 'echo build'" "$APP_CMD"
make_app "$APP" "$ROOT"
commit_version "$APP" v1
git -C "$APP" push -q blue main 2>>"$WORK/push.log"
git -C "$APP" push -q green main 2>>"$WORK/push.log"
# serve under socket activation: the holder keeps the sockets across restarts.
HOLDER_PIDFILE="$WORK/serve.pid"
spawn python3 "$BENCH_DIR/socket-holder.py" "$HOLDER_PIDFILE" \
    "127.0.0.1:$FRONT,127.0.0.1:$BLUE_PORT,127.0.0.1:$GREEN_PORT,127.0.0.1:$CONTROL" \
    "$BG" serve --root "$ROOT" >>"$WORK/serve.log" 2>&1
HOLDER_PID=$LAST_PID
wait_http "http://127.0.0.1:$CONTROL/status" 20
SERVE_PID=$(cat "$HOLDER_PIDFILE")
wait_http "http://127.0.0.1:$FRONT/" 20
wait_http "http://127.0.0.1:$BLUE_PORT/" 20
wait_http "http://127.0.0.1:$GREEN_PORT/" 20

active() { "$BG" status --root "$ROOT" --json | jq -r '.active'; }
# restart_serve: `systemctl restart bluegreen` with the socket unit; returns once the new
# daemon serves both slots.
restart_serve() {
    local old; old=$(cat "$HOLDER_PIDFILE")
    kill -USR1 "$HOLDER_PID"
    for _ in $(seq 300); do
        [[ $(cat "$HOLDER_PIDFILE") != "$old" ]] && break
        sleep 0.1
    done
    [[ $(cat "$HOLDER_PIDFILE") != "$old" ]] || { echo "serve was not restarted"; return 1; }
    wait_http "http://127.0.0.1:$CONTROL/status" 20
    "$BG" status --root "$ROOT" | head -n 3
}
other() { [[ $1 == blue ]] && echo green || echo blue; }

STEPS=()
step() { # NAME CMD...: runs CMD, notes exit code, time, last output line and who answers the front
    local name="$1" t0 t1 rc=0 out
    shift
    t0=$(now)
    out=$("$@" 2>&1) || rc=$?
    t1=$(now)
    # the line that tells the outcome: the hook's verdict, or the command's last line
    local said; said=$(grep -E 'live|not live|switched|refused|error|failed' <<<"$out" | tail -n1 || true)
    [[ -n $said ]] || said=$(tail -n1 <<<"$out")
    said=${said#remote: }
    local front; front=$(curl -sS --max-time 2 "http://127.0.0.1:$FRONT/" 2>&1 | head -c 80 || true)
    STEPS+=("| $name | $rc | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') | $(tr '|' '/' <<<"$said" | cut -c1-90 | sed 's/ *$//') | ${front%$'\n'} |")
    echo "step $name: rc=$rc $said" >&2
    sleep "$PAUSE"
}

wrk -t2 -c32 -d"$DURATION" --latency -s "$BENCH_DIR/status-count.lua" "http://127.0.0.1:$FRONT/" >"$WORK/wrk.txt" 2>&1 &
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
step "restart serve (socket unit)" restart_serve
step "restart serve again" restart_serve
SERVE_PID=$(cat "$HOLDER_PIDFILE")
T_STEPS=$(awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')

wait "$WRK_PID" || true
wrk_parse "$WORK/wrk.txt"
FAILED=$((W_NON2XX + W_CONNECT + W_READ + W_WRITE + W_TIMEOUT))
kill -0 "$SERVE_PID" 2>/dev/null || { echo "serve died" >&2; FAILED=$((FAILED + 1)); }

echo
echo "### zero-downtime.sh ($APP_KIND app): wrk -t2 -c32 -d$DURATION on the front port, steps done in the first ${T_STEPS}s"
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
echo
echo "wrk status codes: $(grep '^status ' "$WORK/wrk.txt" | tr '\n' ' ')"
grep '^non-2xx body' "$WORK/wrk.txt" || true
[[ $verdict == PASS ]] || { echo; echo "serve log, warnings and errors:"; grep -E ' (WARN|ERROR) ' "$WORK/serve.log" | uniq -c -f1 | head -n 30; }
[[ $verdict == PASS ]] || exit 1
