#!/usr/bin/env bash
# bench/chaos.sh: kill -9 the hook or the daemon in the middle of deploys; does the root stay sound?
#
# A root with the built-in sample app and a build that takes a little while
# ("sh -c 'sleep 0.3'"), both slots pushed, `bluegreen serve` running. CHAOS_RUNS (default
# 100) times:
#   1. commit a new VERSION and start `git push blue main` in its own process group;
#   2. after a random 0-400 ms, SIGKILL either the daemon, or the hook (the process named
#      post-receive running the bluegreen binary in this root; when it is not running yet
#      or any more, the whole `git push` process group);
#   3. wait for the push (a push that takes over 60 s counts as a hang), check the files;
#   4. restart serve if it was killed; a fresh push must say "live" and blue must serve it
#      (a ref lock git itself left, when the push group died in its ref update, is counted
#      and removed first, as git tells the pusher to);
#   5. check the invariants, stop serve with SIGTERM, check no worker is left (orphans),
#      start serve again, check both slots answer.
# Invariants: every <slot>/current points at a folder with .bluegreen-release.json; every
# non-dot folder in <slot>/releases/ has one too; no builds/<key>/ folder without
# .bluegreen-build.json; state.json (when present) parses; after a restart both slots answer;
# no process carrying BLUEGREEN_WORKER_OF=<root> once serve is stopped.
# Usage: bench/chaos.sh   (env: BLUEGREEN_BIN, CHAOS_RUNS=100, SEED=<RANDOM seed>,
#        CHAOS_VICTIM=any|daemon|hook, KEEP_TMP=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM
need_tools jq

bg_bin
RUNS="${CHAOS_RUNS:-100}"
SEED="${SEED:-$$}"
RANDOM=$SEED
mktmp WORK
ROOT="$WORK/root"
APP="$WORK/app"
LOG="$WORK/chaos.log"

make_root "$ROOT" "sh -c 'sleep 0.3'" "$BG sample-app" '
[heartbeat]
interval = "1s"'
sed -i 's/^drain_timeout = .*/drain_timeout = "1s"/; s/^stop_timeout = .*/stop_timeout = "1s"/' "$ROOT/bluegreen.toml"
"$BG" check --root "$ROOT" >/dev/null
make_app "$APP" "$ROOT"
git -C "$APP" push -q blue main 2>>"$LOG"
git -C "$APP" push -q green main 2>>"$LOG"
start_serve "$ROOT" "$WORK/serve.log"
wait_http "http://127.0.0.1:$BLUE_PORT/" 20
wait_http "http://127.0.0.1:$GREEN_PORT/" 20

declare -A BROKEN
BROKEN_RUNS=()
GIT_LOCKS=0
run_broken=""
broken() { # NAME DETAIL
    BROKEN[$1]=$((${BROKEN[$1]:-0} + 1))
    run_broken+="$1 "
    echo "run $run: BROKEN $1: $2" | tee -a "$LOG" >&2
}

check_files() { # WHEN
    local slot cur d
    for slot in blue green; do
        cur="$ROOT/$slot/current"
        if [[ ! -L $cur ]]; then broken current-missing "$1: $cur is not a symlink"
        elif [[ ! -f $cur/.bluegreen-release.json ]]; then broken current-incomplete "$1: $cur -> $(readlink "$cur")"
        fi
        for d in "$ROOT/$slot/releases"/*/; do
            [[ -d $d ]] || continue
            [[ -f $d/.bluegreen-release.json ]] || broken release-incomplete "$1: $d"
        done
    done
    for d in "$ROOT/builds"/*/; do
        [[ -d $d ]] || continue
        [[ -f $d/.bluegreen-build.json ]] || broken build-incomplete "$1: $d"
    done
    if [[ -e $ROOT/state.json ]] && ! jq -e . "$ROOT/state.json" >/dev/null 2>&1; then
        broken state-json "$1: $(head -c 200 "$ROOT/state.json")"
    fi
}

slots_answer() { # WHEN
    local slot port
    for slot in blue green; do
        [[ $slot == blue ]] && port=$BLUE_PORT || port=$GREEN_PORT
        wait_http "http://127.0.0.1:$port/" 15 2>/dev/null || broken slot-down "$1: $slot (port $port) does not answer"
    done
}

restart_serve() { # WHEN
    start_serve "$ROOT" "$WORK/serve.log" || broken serve-start "$1: control API not up"
}

hook_pid() { # the bluegreen hook process working in this root, if any
    local p
    for p in $(pgrep -x post-receive || true); do
        [[ "$(readlink "/proc/$p/exe" 2>/dev/null)" == "$BG" ]] || continue
        [[ "$(readlink "/proc/$p/cwd" 2>/dev/null)" == "$ROOT"/* ]] || continue
        echo "$p"; return
    done
}

describe_pids() { # PID...: what each is, and whether run/workers/ lists its group
    local p
    for p in "$@"; do
        local pg; pg=$(ps -o pgid= -p "$p" | tr -d ' ')
        echo -n "[pid $p pgid $pg ppid $(ps -o ppid= -p "$p" | tr -d ' ') age $(ps -o etimes= -p "$p" | tr -d ' ')s"
        echo -n " release $(readlink "/proc/$p/cwd" | sed 's|.*/releases/||')"
        [[ -e $ROOT/run/workers/$pg ]] && echo -n " listed in run/workers]" || echo -n " NOT listed in run/workers]"
    done
}

wait_push() { # PID SECONDS: 0 when the push exited in time
    local pid="$1" n=$(($2 * 10))
    for _ in $(seq "$n"); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.1; done
    return 1
}

declare -A KILLED
T0=$(now)
for ((run = 1; run <= RUNS; run++)); do
    run_broken=""
    commit_version "$APP" "chaos-$run"
    setsid git -C "$APP" push blue main >"$WORK/push.log" 2>&1 &
    push_pid=$!
    delay=$(awk -v r=$((RANDOM % 401)) 'BEGIN { printf "%.3f", r / 1000 }')
    sleep "$delay"
    pick=$((RANDOM % 2))
    case "${CHAOS_VICTIM:-any}" in daemon) pick=1 ;; hook) pick=0 ;; esac
    if ((pick)); then
        victim=daemon
        kill -KILL "$SERVE_PID" 2>/dev/null || true
        wait "$SERVE_PID" 2>/dev/null || true
    else
        hp=$(hook_pid)
        if [[ -n $hp ]]; then
            victim=hook
            kill -KILL "$hp" 2>/dev/null || true
        elif kill -0 "$push_pid" 2>/dev/null; then
            victim=push-group
            kill -KILL -- "-$push_pid" 2>/dev/null || true
        else
            victim=none-push-done
        fi
    fi
    KILLED[$victim]=$((${KILLED[$victim]:-0} + 1))
    if ! wait_push "$push_pid" 60; then
        broken push-hang "push still running 60 s after killing the $victim; $(tail -n1 "$WORK/push.log")"
        kill -KILL -- "-$push_pid" 2>/dev/null || true
    fi
    echo "run $run: killed $victim after ${delay}s; push said: $(grep -o 'blue: .*' "$WORK/push.log" | tail -n1)" >>"$LOG"
    check_files "after kill"
    # git's own lock: a receive-pack killed during its ref update leaves it, and git
    # refuses the next push with "remove the file manually to continue". Not ours to
    # remove (it may be a live push's); done here as the user would, and counted.
    if [[ -e $ROOT/blue.git/refs/heads/main.lock ]]; then
        GIT_LOCKS=$((GIT_LOCKS + 1))
        echo "run $run: git left blue.git/refs/heads/main.lock (killed during its ref update); removed" >>"$LOG"
        rm -f "$ROOT/blue.git/refs/heads/main.lock"
    fi

    if [[ $victim == daemon ]]; then
        restart_serve "restart after kill"
    fi
    commit_version "$APP" "fresh-$run"
    if ! timeout 60 git -C "$APP" push blue main >"$WORK/fresh.log" 2>&1; then
        broken fresh-push "exit non-zero: $(tail -n2 "$WORK/fresh.log" | tr '\n' ' ')"
    elif ! grep -q "blue: live in" "$WORK/fresh.log"; then
        broken fresh-push "not live: $(grep -o 'blue: .*' "$WORK/fresh.log" | tail -n1)"
    fi
    body=$(curl -sS --max-time 2 "http://127.0.0.1:$BLUE_PORT/" 2>&1 || true)
    [[ $body == "fresh-$run "* ]] || broken fresh-not-served "blue answers: ${body:0:100}"
    check_files "after fresh push"
    slots_answer "after fresh push"

    stop_serve || broken serve-stop-hang "serve ignored SIGTERM for 20 s"
    sleep 0.2
    left=$(workers_of "$ROOT" | tr '\n' ' ')
    [[ -z $left ]] || { broken orphan "workers alive after serve stopped: $(describe_pids $left)"; for p in $left; do kill -KILL "$p" 2>/dev/null || true; done; }
    restart_serve "restart after stop"
    slots_answer "after restart"
    [[ -z $run_broken ]] || BROKEN_RUNS+=("$run($victim:${run_broken% })")
    ((run % 10)) || echo "chaos: $run/$RUNS runs, $(awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s" >&2
done
ELAPSED=$(awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
stop_serve
left=$(workers_of "$ROOT" | tr '\n' ' ')
[[ -z $left ]] || broken orphan "at the end: $(describe_pids $left)"
tmp_left=$(find "$ROOT/builds/.tmp" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
rel_tmp_left=$(find "$ROOT"/{blue,green}/releases -mindepth 1 -maxdepth 1 -name '.tmp-*' 2>/dev/null | wc -l)

echo
echo "### chaos.sh: $RUNS deploys with a SIGKILL at 0-400 ms, seed $SEED, ${ELAPSED}s"
echo
echo "| runs | killed daemon | killed hook | killed push group | push done before kill | runs with a broken invariant |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| $RUNS | ${KILLED[daemon]:-0} | ${KILLED[hook]:-0} | ${KILLED[push-group]:-0} | ${KILLED[none-push-done]:-0} | ${#BROKEN_RUNS[@]} |"
echo
echo "| invariant | times broken |"
echo "| --- | ---: |"
for name in current-missing current-incomplete release-incomplete build-incomplete state-json push-hang fresh-push fresh-not-served slot-down serve-start serve-stop-hang orphan; do
    echo "| $name | ${BROKEN[$name]:-0} |"
done
echo
echo "leftover temp folders (not an invariant): builds/.tmp/* $tmp_left, releases/.tmp-* $rel_tmp_left"
echo "git ref locks left by a receive-pack killed in its ref update (git's, removed as its message says): $GIT_LOCKS"
((${#BROKEN_RUNS[@]} == 0)) || echo "broken runs: ${BROKEN_RUNS[*]}"
