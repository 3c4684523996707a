#!/usr/bin/env bash
# bench/proxy.sh: throughput and latency of bluegreen's proxy next to nginx's.
#
# One upstream (nginx, 1 worker, `return 200 "hello\n"`), started by bluegreen as blue's
# worker generation ([app] command runs `sh -c 'sed ... && exec nginx ...'` on the
# generation's {port}), and every row goes to that one process:
#   - nginx-direct: wrk straight to its port;
#   - nginx-proxy: an nginx reverse proxy (2 workers, upstream keepalive 64 with no cap
#     on a connection's requests, HTTP/1.1, Connection "", and the header work bluegreen
#     does: Host passed on, X-Forwarded-For/-Proto/-Host set) in front of it;
#   - bluegreen-slot and bluegreen-front: blue's slot listener and the front router.
# Each row: 3 s warm-up, then `wrk -t2 -c64 -d15s --latency` (DURATION to change it),
# ROUNDS times (default 3). Each round runs nginx-direct first (for reference), then the
# three compared rows, in an order that changes each round: the three rotations, then
# the three reversed ones. Over 3 rounds each row runs once in each place; over 6, each
# row also follows each other row equally often. A slow minute of this shared machine
# falls on every row alike. The table gives each row's median over the rounds, and the
# ratio per round. Also: the proxy's CPU per request (user and kernel), and the daemon's
# RSS (VmRSS) idle, the peak sampled every second under load, and after.
# Everything (wrk, proxies, upstream) shares this machine's cores: compare the ratios.
# A row with any error (a non-2xx answer, a socket error) makes the run INVALID (exit 1):
# a proxy answering fast 502s must not read as a fast proxy.
# BODY=N: every request is a POST with an N-byte body instead of a GET (a request with a
# body goes to bluegreen's worker with `Connection: close`, on a new connection, unless
# REUSE_AFTER_BODY=true sets `app.reuse_after_body`: see README "HTTP").
# Usage: bench/proxy.sh   (env: BLUEGREEN_BIN, DURATION=15s, ROUNDS=3, BODY, REUSE_AFTER_BODY,
# KEEP_TMP=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM

need_tools nginx wrk
bg_bin
DURATION="${DURATION:-15s}"
ROUNDS="${ROUNDS:-3}"
((ROUNDS >= 1)) || { echo "ROUNDS=$ROUNDS: at least one round is needed" >&2; exit 2; }
BODY="${BODY:-}"
REUSE_AFTER_BODY="${REUSE_AFTER_BODY:-false}"
mktmp WORK
mkdir -p "$WORK/tmp"
TICK=$(getconf CLK_TCK)

# --- nginx configs -----------------------------------------------------------------
TEMP_PATHS=$(nginx_temp_paths "$WORK/tmp")

# The upstream, @PORT@ filled by its generation.
cat >"$WORK/upstream.conf.tmpl" <<EOF
worker_processes 1;
pid $WORK/up-@PORT@.pid;
error_log $WORK/up-@PORT@.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    $TEMP_PATHS
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:@PORT@;
        location / { default_type text/plain; return 200 "hello\n"; }
    }
}
EOF

# --- bluegreen, with the upstream as blue's worker ------------------------------------
ROOT="$WORK/root"
APP_CMD="sh -c 'sed s/@PORT@/\$PORT/g $WORK/upstream.conf.tmpl > $WORK/up-\$PORT.conf && exec nginx -e $WORK/up-\$PORT.err -c $WORK/up-\$PORT.conf -g \"daemon off;\"'"
make_root "$ROOT" "" "$APP_CMD"
sed -i "s/^stop_timeout = .*/&\nreuse_after_body = $REUSE_AFTER_BODY/" "$ROOT/bluegreen.toml"
"$BG" check --root "$ROOT" >/dev/null
make_app "$WORK/app" "$ROOT"
git -C "$WORK/app" push -q blue main 2>"$WORK/push.log"
start_serve "$ROOT" "$WORK/serve.log"
wait_http "http://127.0.0.1:$BLUE_PORT/" 20
wait_http "http://127.0.0.1:$FRONT/" 20
UP_PORT=$(live_port blue)

# --- nginx's proxy, in front of the same upstream -------------------------------------
free_port PX_PORT
cat >"$WORK/proxy.conf" <<EOF
worker_processes 2;
pid $WORK/proxy.pid;
error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    $TEMP_PATHS
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$PX_PORT;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What bluegreen does to every request, so both proxies do the same work.
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF

spawn nginx -e "$WORK/proxy.err" -c "$WORK/proxy.conf" -g 'daemon off;'
PROXY_MASTER=$LAST_PID
# wrk's script for BODY: a POST with that many bytes.
WRK_SCRIPT=()
if [[ -n $BODY ]]; then
    printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n' "$BODY" >"$WORK/post.lua"
    WRK_SCRIPT=(-s "$WORK/post.lua")
fi
wait_http "http://127.0.0.1:$UP_PORT/" 5
wait_http "http://127.0.0.1:$PX_PORT/" 5
for p in "$UP_PORT" "$PX_PORT" "$BLUE_PORT" "$FRONT"; do
    [[ "$(curl -fsS "http://127.0.0.1:$p/")" == hello ]] || { echo "port $p does not answer hello" >&2; exit 1; }
done

cpu_ticks() { # PID...: "utime stime" of these processes and their children (threads included)
    local user=0 sys=0 p kids
    for p in "$@"; do
        kids=$(pgrep -P "$p" || true)
        for k in $p $kids; do
            [[ -r /proc/$k/stat ]] || continue
            read -r u s < <(awk '{print $14, $15}' "/proc/$k/stat")
            user=$((user + u)); sys=$((sys + s))
        done
    done
    echo "$user $sys"
}

sleep 1
RSS_IDLE=$(rss_kb "$SERVE_PID")

# Per row, one value per round (space-separated).
declare -A RPS P50 P99 UCPU KCPU ERR
run_row() { # NAME PORT [PID whose CPU counts]
    local name="$1" port="$2" pid="${3:-}" u0=0 s0=0 u1=0 s1=0 sampler=""
    wrk -t2 -c64 -d3s "${WRK_SCRIPT[@]}" "http://127.0.0.1:$port/" >/dev/null
    [[ -n $pid ]] && read -r u0 s0 < <(cpu_ticks "$pid")
    if [[ $pid == "$SERVE_PID" ]]; then
        (while kill -0 "$SERVE_PID" 2>/dev/null; do rss_kb "$SERVE_PID"; sleep 1; done) >>"$WORK/rss-load" &
        sampler=$!
    fi
    wrk -t2 -c64 -d"$DURATION" --latency "${WRK_SCRIPT[@]}" "http://127.0.0.1:$port/" >"$WORK/wrk-$name.txt"
    [[ -n $sampler ]] && { kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; }
    [[ -n $pid ]] && read -r u1 s1 < <(cpu_ticks "$pid")
    wrk_parse "$WORK/wrk-$name.txt"
    RPS[$name]+="$W_RPS "; P50[$name]+="$W_P50 "; P99[$name]+="$W_P99 "
    ERR[$name]=$((${ERR[$name]:-0} + W_NON2XX + W_CONNECT + W_READ + W_WRITE + W_TIMEOUT))
    if [[ -n $pid ]]; then
        UCPU[$name]+="$(per_request $((u1 - u0)) "$W_REQS") "
        KCPU[$name]+="$(per_request $((s1 - s0)) "$W_REQS") "
    fi
    echo "$name: $(grep -E 'requests in|Requests/sec|Socket|Non-2xx' "$WORK/wrk-$name.txt" | tr -s ' ' | tr '\n' ';')" >&2
}

per_request() { # TICKS REQUESTS: µs of CPU per request ("nan" for no request)
    awk -v t="$1" -v hz="$TICK" -v n="${2:-0}" 'BEGIN { if (n > 0) printf "%.2f", t / hz / n * 1e6; else print "nan" }'
}

ratios() { # A B: "a1/b1 a2/b2 ..." per round, as x.xx
    paste -d' ' <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) |
        awk '{ printf "%s%s", (NR > 1 ? ", " : ""), ($2 > 0 ? sprintf("%.2f", $1 / $2) : "nan") }'
}

ratio() { # A B: a / b, or nan
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'
}

ROWS=("nginx-proxy $PX_PORT $PROXY_MASTER" "bluegreen-slot $BLUE_PORT $SERVE_PID"
    "bluegreen-front $FRONT $SERVE_PID")
# The order of the compared rows in each round: the rotations, then the reversed ones
# (P S F, S F P, F P S, F S P, S P F, P F S), over and over.
ORDERS=("0 1 2" "1 2 0" "2 0 1" "2 1 0" "1 0 2" "0 2 1")
((ROUNDS % 3 == 0)) || echo "ROUNDS=$ROUNDS is not a multiple of 3: the rows do not run equally often in each place" >&2
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    run_row nginx-direct "$UP_PORT"
    for i in ${ORDERS[$(((round - 1) % 6))]}; do
        # shellcheck disable=SC2086 # one row's three words
        run_row ${ROWS[$i]}
    done
done
RSS_LOAD=$(maxof <"$WORK/rss-load")
sleep 2
RSS_AFTER=$(rss_kb "$SERVE_PID")

echo
REQUESTS="GET"
[[ -n $BODY ]] && REQUESTS="POST of $BODY bytes (app.reuse_after_body = $REUSE_AFTER_BODY)"
echo "### proxy.sh: wrk -t2 -c64 -d$DURATION --latency, $REQUESTS, answer \"hello\\n\", median of $ROUNDS rounds (2 cores shared by wrk, proxy, upstream)"
echo
echo "| target | requests/s | p50 ms | p99 ms | errors | proxy CPU µs/req (user + kernel) | req/s vs nginx-proxy | p99 vs nginx-proxy | req/s ratio per round |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for name in nginx-direct nginx-proxy bluegreen-slot bluegreen-front; do
    rps=$(med "${RPS[$name]}"); p99=$(med "${P99[$name]}")
    cpu="-"
    if [[ -n ${UCPU[$name]:-} ]]; then
        cpu=$(awk -v u="$(med "${UCPU[$name]}")" -v s="$(med "${KCPU[$name]}")" 'BEGIN { printf "%.1f (%.1f + %.1f)", u + s, u, s }')
    fi
    printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$rps" "$(med "${P50[$name]}")" "$p99" \
        "${ERR[$name]}" "$cpu" \
        "$(ratio "$rps" "$(med "${RPS[nginx-proxy]}")")" \
        "$(ratio "$p99" "$(med "${P99[nginx-proxy]}")")" \
        "$([[ $name == bluegreen-* ]] && ratios "${RPS[$name]}" "${RPS[nginx-proxy]}" || echo -)"
done
echo
echo "| bluegreen serve RSS | KiB |"
echo "| --- | ---: |"
echo "| idle (blue live, before load) | $RSS_IDLE |"
echo "| peak under load (sampled 1/s) | $RSS_LOAD |"
echo "| 2 s after load | $RSS_AFTER |"
echo "| VmHWM (peak, kernel) | $(awk '/^VmHWM:/ {print $2}' "/proc/$SERVE_PID/status") |"

# Errors are summed over the rounds; any at all, and the figures above are not a proxy's.
INVALID=0
for name in nginx-direct nginx-proxy bluegreen-slot bluegreen-front; do
    if ((${ERR[$name]:-0} > 0)); then
        echo "INVALID: $name had ${ERR[$name]} errors (non-2xx answers or socket errors; see $WORK/wrk-$name.txt with KEEP_TMP=1)" >&2
        INVALID=1
    fi
done
exit "$INVALID"
