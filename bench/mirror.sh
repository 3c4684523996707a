#!/usr/bin/env bash
# bench/mirror.sh: how many writes reach the standby when mirroring is on, bluegreen next to
# nginx's mirror module, same run, same two workers.
#
# The built-in sample app runs as blue's and green's generations (each write stores a
# file). wrk sends POST /items/<unique key> with -c32 for DURATION (default 15 s):
#   - through bluegreen's front (blue active, `bluegreen mirroring on`: copies go to green);
#   - through an nginx reverse proxy to blue's generation, with `mirror` (and
#     `mirror_request_body on`) to green's generation: nginx's way of copying requests.
# ROUNDS times (default 2), the two rows taking turns. After each row, once no copy is left
# queued, the items with that row's key prefix are counted on blue's and green's workers:
# what the active took, and what reached the standby.
# Then the memory large writes leave behind: BURST (default 40) writes of 9 MB at once, three
# times, through each proxy (the same keys each time), and the RSS of bluegreen's daemon and
# of nginx's workers before, at the peak (VmHWM) and once the copies are out. BURST=0 skips it.
# Usage: bench/mirror.sh   (env: BLUEGREEN_BIN, DURATION=15s, ROUNDS=2, CLIENTS=32, BURST=40,
# KEEP_TMP=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM

need_tools nginx wrk
bg_bin
DURATION="${DURATION:-15s}"
ROUNDS="${ROUNDS:-2}"
CLIENTS="${CLIENTS:-32}"
BURST="${BURST:-40}"
mktmp WORK
mkdir -p "$WORK/tmp"

ROOT="$WORK/root"
make_root "$ROOT" "" "$BG sample-app"
make_app "$WORK/app" "$ROOT"
git -C "$WORK/app" push -q blue main 2>"$WORK/push.log"
git -C "$WORK/app" push -q green main 2>>"$WORK/push.log"
start_serve "$ROOT" "$WORK/serve.log"
wait_http "http://127.0.0.1:$FRONT/" 20
wait_http "http://127.0.0.1:$BLUE_PORT/" 20
wait_http "http://127.0.0.1:$GREEN_PORT/" 20
# Both slots start together: whichever went live first is active. The rows want blue.
"$BG" switch blue --root "$ROOT" >/dev/null
"$BG" mirroring on --root "$ROOT" >/dev/null
status() { curl -fsS "http://127.0.0.1:$CONTROL/status"; }
BLUE_GEN=$(live_port blue)
GREEN_GEN=$(live_port green)

free_port PX_PORT
cat >"$WORK/proxy.conf" <<EOF
worker_processes 2;
pid $WORK/proxy.pid;
error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    $(nginx_temp_paths "$WORK/tmp")
    keepalive_requests 1000000;
    client_max_body_size 16m;
    upstream active { server 127.0.0.1:$BLUE_GEN; keepalive 64; }
    upstream standby { server 127.0.0.1:$GREEN_GEN; keepalive 64; }
    server {
        listen 127.0.0.1:$PX_PORT;
        location / {
            mirror /mirror;
            mirror_request_body on;
            proxy_pass http://active;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /mirror {
            internal;
            proxy_pass http://standby\$request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
spawn nginx -e "$WORK/proxy.err" -c "$WORK/proxy.conf" -g 'daemon off;'
PROXY_MASTER=$LAST_PID
wait_http "http://127.0.0.1:$PX_PORT/" 5

# Each request a new key: <prefix><thread>-<n>.
cat >"$WORK/post.lua" <<'EOF'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
prefix = os.getenv("KEY_PREFIX")
function request()
  n = n + 1
  return wrk.format("POST", "/items/" .. prefix .. tid .. "-" .. n, nil, "v")
end
EOF

# count PORT PREFIX: items whose name starts with PREFIX on the worker at PORT.
count() {
    curl -fsS "http://127.0.0.1:$1/items" |
        python3 -c 'import json,sys; print(sum(k.startswith(sys.argv[1]) for k in json.load(sys.stdin)))' "$2"
}
# settle: waits until green's item count stops moving (copies still out land first).
settle() {
    local prefix="$1" last=-1 now
    for _ in $(seq 60); do
        now=$(count "$GREEN_GEN" "$prefix")
        [[ $now == "$last" ]] && return
        last=$now
        sleep 0.5
    done
}
mirror_counter() { status | python3 -c 'import json,sys; print(json.load(sys.stdin)["mirroring"]["counters"][sys.argv[1]])' "$1"; }

declare -A WPS P50 P99 TAKEN COPIED
run_row() { # NAME PORT ROUND
    local name="$1" port="$2" prefix="$1-r$3-"
    KEY_PREFIX="$prefix" wrk -t2 -c"$CLIENTS" -d"$DURATION" --latency -s "$WORK/post.lua" \
        "http://127.0.0.1:$port/" >"$WORK/wrk-$name.txt"
    wrk_parse "$WORK/wrk-$name.txt"
    settle "$prefix"
    local taken copied
    taken=$(count "$BLUE_GEN" "$prefix")
    copied=$(count "$GREEN_GEN" "$prefix")
    # A heartbeat switch to green (blue too slow to answer its check) would make green the
    # active for the rest of the row: its counts would not mean what the table says.
    if [[ "$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["active"])')" != blue ]]; then
        echo "$name round $3: blue is no longer the active slot (a heartbeat switch?): see $WORK/serve.log" >&2
        exit 1
    fi
    WPS[$name]+="$W_RPS "; P50[$name]+="$W_P50 "; P99[$name]+="$W_P99 "
    TAKEN[$name]+="$taken "; COPIED[$name]+="$copied "
    echo "$name round $3: $W_RPS writes/s, active took $taken, standby got $copied" >&2
}

QUEUE_FULL0=$(mirror_counter queue_full)
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then
        run_row bluegreen "$FRONT" "$round"; run_row nginx "$PX_PORT" "$round"
    else
        run_row nginx "$PX_PORT" "$round"; run_row bluegreen "$FRONT" "$round"
    fi
done
QUEUE_FULL=$(($(mirror_counter queue_full) - QUEUE_FULL0))

sum() { tr ' ' '\n' <<<"$1" | grep . | awk '{ s += $1 } END { print s }'; }
echo
echo "### mirror.sh: wrk -t2 -c$CLIENTS -d$DURATION POST (a new key each), sample app, $ROUNDS rounds (2 cores shared by wrk, proxy, both workers)"
echo
echo "| proxy | writes/s (median) | p50 ms | p99 ms | writes the active took | copies on the standby | not copied |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for name in bluegreen nginx; do
    taken=$(sum "${TAKEN[$name]}"); copied=$(sum "${COPIED[$name]}")
    printf '| %s | %.0f | %.3f | %.3f | %d | %d | %d (%.2f%%) |\n' "$name" "$(med "${WPS[$name]}")" \
        "$(med "${P50[$name]}")" "$(med "${P99[$name]}")" "$taken" "$copied" $((taken - copied)) \
        "$(awk -v t="$taken" -v c="$copied" 'BEGIN { print t ? (t - c) * 100 / t : 0 }')"
done
echo
echo "bluegreen's copies dropped as queue_full over the run: $QUEUE_FULL"

((BURST > 0)) || exit 0
# kib PID...: VmRSS (or with HWM, VmHWM) summed over these processes.
kib() {
    local field="$1" total=0 p
    shift
    for p in "$@"; do total=$((total + $(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status"))); done
    echo "$total"
}
NGX_WORKERS=$(pgrep -P "$PROXY_MASTER" | tr '\n' ' ')
head -c 9000000 /dev/urandom >"$WORK/big"
burst() { # PORT: BURST writes of 9 MB at once
    local pids=() i
    for i in $(seq "$BURST"); do
        curl -s -o /dev/null -X PUT --data-binary @"$WORK/big" "http://127.0.0.1:$1/items/big-$i" &
        pids+=($!)
    done
    wait "${pids[@]}" || true
}
out() { # once no copy is queued or out, and 2 s more for the last to be freed
    for _ in $(seq 120); do
        [[ "$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["mirroring"]["queued"])')" == 0 ]] && break
        sleep 0.5
    done
    sleep 2
}
# shellcheck disable=SC2086 # the workers' pids, one word each
BG_BEFORE=$(kib VmRSS "$SERVE_PID"); NGX_BEFORE=$(kib VmRSS $NGX_WORKERS)
BG_AFTER=(); NGX_AFTER=()
for b in 1 2 3; do
    burst "$FRONT"; out
    BG_AFTER+=("$(kib VmRSS "$SERVE_PID")")
    burst "$PX_PORT"; out
    # shellcheck disable=SC2086
    NGX_AFTER+=("$(kib VmRSS $NGX_WORKERS)")
    echo "burst $b: bluegreen ${BG_AFTER[-1]} KiB, nginx's workers ${NGX_AFTER[-1]} KiB after" >&2
done
echo
echo "### $BURST writes of 9 MB at once, three times per proxy (mirroring on): RSS in KiB"
echo
echo "| proxy | before | peak (VmHWM) | after burst 1 | after burst 2 | after burst 3 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
echo "| bluegreen serve | $BG_BEFORE | $(kib VmHWM "$SERVE_PID") | ${BG_AFTER[0]} | ${BG_AFTER[1]} | ${BG_AFTER[2]} |"
# shellcheck disable=SC2086
echo "| nginx workers (2) | $NGX_BEFORE | $(kib VmHWM $NGX_WORKERS) | ${NGX_AFTER[0]} | ${NGX_AFTER[1]} | ${NGX_AFTER[2]} |"
echo
echo "bluegreen's copies of these: $(status | python3 -c 'import json,sys; c=json.load(sys.stdin)["mirroring"]["counters"]; print(", ".join(f"{k} {v}" for k, v in c.items() if v))')"
