#!/usr/bin/env bash
# bench/push-to-live.sh: time from `git push` start until blue's slot port serves the new version.
#
# A root with the built-in sample app, build command "", `bluegreen serve` running, blue
# pushed once. Then RUNS (default 10) times: commit a new VERSION, start `git push blue main`
# in the background and poll blue's slot listener with curl every 10 ms until the answer
# starts with the new VERSION text. Reported: median and max of that time, and of the push
# itself (which returns once the daemon says the new generation is live).
# Usage: bench/push-to-live.sh   (env: BLUEGREEN_BIN, RUNS=10, KEEP_TMP=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM
need_tools

bg_bin
RUNS="${RUNS:-10}"
mktmp WORK
ROOT="$WORK/root"
APP="$WORK/app"

make_root "$ROOT" "" "$BG sample-app"
make_app "$APP" "$ROOT"
git -C "$APP" push -q blue main 2>>"$WORK/push.log"
start_serve "$ROOT" "$WORK/serve.log"
wait_http "http://127.0.0.1:$BLUE_PORT/" 20

LIVE=(); PUSH=()
for ((i = 1; i <= RUNS; i++)); do
    ver="v$i-$RANDOM$RANDOM"
    commit_version "$APP" "$ver"
    t0=$(now)
    git -C "$APP" push blue main >"$WORK/push-$i.log" 2>&1 &
    push_pid=$!
    t_live=""
    for _ in $(seq 3000); do # 30 s at most
        body=$(curl -sS --max-time 1 "http://127.0.0.1:$BLUE_PORT/" 2>/dev/null || true)
        if [[ $body == "$ver "* ]]; then t_live=$(now); break; fi
        sleep 0.01
    done
    rc=0; wait "$push_pid" || rc=$?
    t_push=$(now)
    [[ -n $t_live ]] || { echo "run $i: $ver never served" >&2; cat "$WORK/push-$i.log" >&2; exit 1; }
    grep -q "live in" "$WORK/push-$i.log" || { echo "run $i: push did not report live (rc $rc)" >&2; cat "$WORK/push-$i.log" >&2; }
    LIVE+=("$(awk -v a="$t0" -v b="$t_live" 'BEGIN { printf "%.3f", b - a }')")
    PUSH+=("$(awk -v a="$t0" -v b="$t_push" 'BEGIN { printf "%.3f", b - a }')")
    echo "run $i: served after ${LIVE[-1]}s, push returned after ${PUSH[-1]}s: $(grep -o 'blue: live.*' "$WORK/push-$i.log")" >&2
    sleep 0.5
done

echo
echo "### push-to-live.sh: $RUNS pushes to blue, build \"\", sample app, poll every 10 ms"
echo
echo "| measure | median s | max s |"
echo "| --- | ---: | ---: |"
printf "| push start to new VERSION served on blue's port | %.3f | %.3f |\n" "$(printf '%s\n' "${LIVE[@]}" | median)" "$(printf '%s\n' "${LIVE[@]}" | maxof)"
printf '| push start to `git push` returned | %.3f | %.3f |\n' "$(printf '%s\n' "${PUSH[@]}" | median)" "$(printf '%s\n' "${PUSH[@]}" | maxof)"
