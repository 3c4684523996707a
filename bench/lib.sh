# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# bench/lib.sh: helpers shared by the bench scripts (sourced, not run).
#
# - bg_bin: the bluegreen binary: $BLUEGREEN_BIN, else `cargo build --release` and target/release/bluegreen
# - need_tools CMD[:PACKAGE]...: apt-get installs what is missing, with the tools this file
#   itself uses (curl, ss, pgrep, git, python3)
# - free_port VAR: a loopback TCP port in 10000-31999 nobody uses (and not handed out before in this run)
# - mktmp VAR: a temp folder, removed at exit (unless KEEP_TMP=1)
# (both set VAR rather than print, so that what they remember survives: no $(...) subshell)
# - make_root ROOT BUILD_CMD APP_CMD: `bluegreen init` + a config with free ports
# - start_serve ROOT LOG / stop_serve: the daemon in the background, waited for
# - live_port SLOT: the port of the slot's live generation, from the control API
# - spawn CMD...: start a background process and remember its pid for the cleanup trap
# - median / maxof: over numbers on stdin
# Every process a script starts goes through spawn/start_serve and is killed by cleanup(),
# and so is any worker left of a root made by make_root.

# Numbers are printed and read with a dot, whatever the caller's locale; nginx is found
# where Debian puts it, even for a user whose PATH lacks the sbin folders.
export LC_ALL=C
PATH="$PATH:/usr/sbin:/sbin"
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
PIDS=()
TMPDIRS=()
ROOTS=()

bg_bin() {
    if [[ -n "${BLUEGREEN_BIN:-}" ]]; then
        BG="$BLUEGREEN_BIN"
    else
        # the tree's own binary, brought up to date (a no-op when it is)
        (cd "$REPO_DIR" && cargo build --release -q >&2)
        BG="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/bluegreen"
    fi
    [[ -x "$BG" ]] || { echo "no bluegreen binary at $BG" >&2; exit 1; }
    if ! "$BG" --help 2>&1 | grep -q serve; then
        echo "$BG does not look like bluegreen (no \`serve\` in its --help)" >&2
        exit 1
    fi
    BG="$(realpath "$BG")"
}

need_tools() {
    local missing=() spec
    for spec in "$@" curl ss:iproute2 pgrep:procps git python3; do
        command -v "${spec%%:*}" >/dev/null || missing+=("${spec#*:}")
    done
    if ((${#missing[@]})); then
        apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
        # Debian starts the packaged nginx on :80 where it can: not ours to leave running.
        if [[ " ${missing[*]} " == *" nginx "* && -s /run/nginx.pid ]]; then
            nginx -s quit 2>/dev/null || true
        fi
    fi
}

USED_PORTS=" "
free_port() {
    local p
    while :; do
        p=$((10000 + RANDOM % 22000)) # below the ephemeral range (32768+), where generations get theirs
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        ss -Htan "( sport = :$p )" 2>/dev/null | grep -q . && continue
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return
    done
}

mktmp() {
    local d
    d="$(mktemp -d "${TMPDIR:-/tmp}/bgbench.XXXXXX")"
    TMPDIRS+=("$d")
    printf -v "$1" '%s' "$d"
}

spawn() {
    "$@" &
    PIDS+=("$!")
    LAST_PID=$!
}

# Kills every process this script started: SIGTERM, and SIGKILL to what is left after 15 s
# (a daemon drains for up to drain_timeout, 5 s, and stops its workers within
# stop_timeout, 3 s); then any worker of a root of ours that outlived its daemon.
cleanup() {
    local rc=$? pid alive root
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 150); do
        alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    # The daemon's own record of its workers' process groups (an nginx worker rewrites
    # its environment with its title, so `workers_of` cannot find it), and the workers
    # that still carry the mark.
    for root in "${ROOTS[@]}"; do
        for pid in "$root"/run/workers/*; do
            pid="${pid##*/}"
            [[ $pid =~ ^[0-9]+$ ]] && kill -KILL -- "-$pid" 2>/dev/null || true
        done
        for pid in $(workers_of "$root"); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    wait 2>/dev/null || true
    if [[ -z "${KEEP_TMP:-}" ]]; then
        for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done
    else
        echo "kept: ${TMPDIRS[*]}" >&2
    fi
    exit "$rc"
}

# make_root ROOT BUILD_CMD APP_CMD [extra toml appended]
# Sets FRONT, CONTROL, BLUE_PORT, GREEN_PORT.
make_root() {
    local root="$1" build="$2" app="$3" extra="${4:-}"
    ROOTS+=("$root")
    "$BG" init "$root" >/dev/null
    free_port FRONT; free_port CONTROL; free_port BLUE_PORT; free_port GREEN_PORT
    cat >"$root/bluegreen.toml" <<EOF
branch = "main"
keep_releases = 5

[build]
command = $(toml_str "$build")

[app]
command = $(toml_str "$app")
ready_timeout = "10s"
drain_timeout = "5s"
stop_timeout = "3s"

[router]
listen = "127.0.0.1:$FRONT"

[control]
listen = "127.0.0.1:$CONTROL"

[slots.blue]
listen = "127.0.0.1:$BLUE_PORT"

[slots.green]
listen = "127.0.0.1:$GREEN_PORT"
$extra
EOF
    "$BG" check --root "$root" >/dev/null
}

toml_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# make_app DIR ROOT: a work repo with VERSION=v0 and remotes blue/green on ROOT.
make_app() {
    local dir="$1" root="$2"
    git init -q -b main "$dir"
    git -C "$dir" config user.email bench@example.invalid
    git -C "$dir" config user.name bench
    echo v0 >"$dir/VERSION"
    git -C "$dir" add -A
    git -C "$dir" commit -qm v0
    git -C "$dir" remote add blue "$root/blue.git"
    git -C "$dir" remote add green "$root/green.git"
}

# commit_version DIR TEXT: writes TEXT into VERSION and commits it.
commit_version() {
    echo "$2" >"$1/VERSION"
    git -C "$1" commit -qam "$2"
}

wait_http() { # URL [seconds]
    local url="$1" n=$((${2:-15} * 20))
    for _ in $(seq "$n"); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "timed out waiting for $url" >&2
    return 1
}

# start_serve ROOT LOG: runs `bluegreen serve` in the background; SERVE_PID is its pid.
start_serve() {
    local root="$1" log="$2"
    spawn "$BG" serve --root "$root" >>"$log" 2>&1
    SERVE_PID=$LAST_PID
    wait_http "http://127.0.0.1:$CONTROL/status" 20
}

# live_port SLOT: the port of SLOT's live generation, as the control API gives it.
live_port() {
    curl -fsS "http://127.0.0.1:$CONTROL/status" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["slots"][sys.argv[1]]["live"]["port"])' "$1"
}

# stop_serve: SIGTERM, then SIGKILL after 20 s; returns 1 when SIGKILL was needed.
stop_serve() {
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$SERVE_PID" 2>/dev/null || { wait "$SERVE_PID" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    echo "serve (pid $SERVE_PID) still running 20 s after SIGTERM: SIGKILL" >&2
    kill -KILL "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    return 1
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
maxof() { sort -g | tail -n1; }
# med "LIST": the median of a space-separated list.
med() { tr ' ' '\n' <<<"$1" | grep . | median; }

# nginx_temp_paths DIR: the directives that keep an nginx's temp files under DIR (run as
# any user, and apart from every other nginx of the run).
nginx_temp_paths() {
    echo "client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fcgi;"
    echo "    uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;"
}

# rss_kb PID: resident set of a process in KiB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# workers_of ROOT: pids whose environment carries BLUEGREEN_WORKER_OF=ROOT.
workers_of() {
    local root="$1" f
    for f in /proc/[0-9]*/environ; do
        if { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF "BLUEGREEN_WORKER_OF=$root"; then
            f="${f#/proc/}"; echo "${f%/environ}"
        fi
    done
}

# wrk_parse FILE: sets W_REQS (total), W_RPS, W_P50, W_P99 (ms), W_NON2XX, W_CONNECT,
# W_READ, W_WRITE, W_TIMEOUT from wrk --latency output.
wrk_parse() {
    local f="$1"
    # A latency missing from the output is "nan", never a fine-looking 0.
    to_ms() { awk -v v="$1" 'BEGIN { if (v == "") { print "nan"; exit } n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        else if (u == "h") n *= 3600000; printf "%.3f", n }'; }
    W_REQS=$(awk '/requests in/ {print $1}' "$f")
    W_RPS=$(awk '/^Requests\/sec:/ {print $2}' "$f")
    W_P50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")
    W_P99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
    W_NON2XX=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$f"); W_NON2XX=${W_NON2XX:-0}
    local se; se=$(grep 'Socket errors:' "$f" || true)
    W_CONNECT=$(sed -n 's/.*connect \([0-9]*\).*/\1/p' <<<"$se"); W_CONNECT=${W_CONNECT:-0}
    W_READ=$(sed -n 's/.*read \([0-9]*\).*/\1/p' <<<"$se"); W_READ=${W_READ:-0}
    W_WRITE=$(sed -n 's/.*write \([0-9]*\).*/\1/p' <<<"$se"); W_WRITE=${W_WRITE:-0}
    W_TIMEOUT=$(sed -n 's/.*timeout \([0-9]*\).*/\1/p' <<<"$se"); W_TIMEOUT=${W_TIMEOUT:-0}
}
