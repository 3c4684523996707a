#!/usr/bin/env bash
# bench/proxy.sh: throughput and latency of bluegreen's proxy next to nginx's.
#
# One upstream config (nginx, 1 worker, `return 200 "hello\n"`), instantiated twice:
#   - "up-direct": started by this script; wrk hits it directly (row nginx-direct), and an
#     nginx reverse proxy (2 workers, upstream keepalive 64, HTTP/1.1, Connection "", and
#     the header work bluegreen does: Host passed on, X-Forwarded-For/-Proto/-Host set)
#     forwards to it (row nginx-proxy);
#   - started by bluegreen itself as blue's worker generation ([app] command runs
#     `sh -c 'sed ... && exec nginx ...'` on the generation's {port}); wrk goes through
#     blue's slot listener (row bluegreen-slot) and the front router (row bluegreen-front).
# Each row: 3 s warm-up, then `wrk -t2 -c64 -d15s --latency` (DURATION to change it),
# ROUNDS times (default 3) with the rows taking turns, each round starting one row further
# on, so that a slow minute of this shared machine, and a row's place in the round, fall
# on every row alike; the table gives each row's median over the rounds, and the ratio per
# round. Also: the proxy's CPU per request (user and kernel), and the
# daemon's RSS (VmRSS) idle, the peak sampled every second under load, and after.
# Everything (wrk, proxies, upstreams) shares this machine's cores: compare the ratios.
# Usage: bench/proxy.sh   (env: BLUEGREEN_BIN, DURATION=15s, ROUNDS=3, KEEP_TMP=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM

need_tools nginx wrk
bg_bin
DURATION="${DURATION:-15s}"
ROUNDS="${ROUNDS:-3}"
mktmp WORK
mkdir -p "$WORK/tmp"
TICK=$(getconf CLK_TCK)

# --- nginx configs -----------------------------------------------------------------
TEMP_PATHS=$(nginx_temp_paths "$WORK/tmp")

# The upstream, @PORT@ filled per instance.
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

free_port UP_PORT
free_port PX_PORT
sed "s/@PORT@/$UP_PORT/g" "$WORK/upstream.conf.tmpl" >"$WORK/up-direct.conf"
cat >"$WORK/proxy.conf" <<EOF
worker_processes 2;
pid $WORK/proxy.pid;
error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    $TEMP_PATHS
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }
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

spawn nginx -e "$WORK/up-direct.err" -c "$WORK/up-direct.conf" -g 'daemon off;'
spawn nginx -e "$WORK/proxy.err" -c "$WORK/proxy.conf" -g 'daemon off;'
PROXY_MASTER=$LAST_PID

# --- bluegreen, with the same upstream as blue's worker ------------------------------
ROOT="$WORK/root"
APP_CMD="sh -c 'sed s/@PORT@/\$PORT/g $WORK/upstream.conf.tmpl > $WORK/up-\$PORT.conf && exec nginx -e $WORK/up-\$PORT.err -c $WORK/up-\$PORT.conf -g \"daemon off;\"'"
make_root "$ROOT" "" "$APP_CMD"
make_app "$WORK/app" "$ROOT"
git -C "$WORK/app" push -q blue main 2>"$WORK/push.log"
start_serve "$ROOT" "$WORK/serve.log"
wait_http "http://127.0.0.1:$BLUE_PORT/" 20
wait_http "http://127.0.0.1:$FRONT/" 20
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
echo "SERVE_PID=$SERVE_PID BLUE=$BLUE_PORT PX=$PX_PORT PXM=$PROXY_MASTER" >&2
wrk -t2 -c64 -d25s "http://127.0.0.1:$BLUE_PORT/" > /tmp/pf/wrk-slot.txt &
sleep 5
perf record -F 1999 -g -p "$SERVE_PID" -o /tmp/pf/bg.data -- sleep 10 2>/dev/null
wait
wrk -t2 -c64 -d25s "http://127.0.0.1:$PX_PORT/" > /tmp/pf/wrk-px.txt &
sleep 5
perf record -F 1999 -g -a -o /tmp/pf/ngx.data -- sleep 10 2>/dev/null
wait
