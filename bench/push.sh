#!/usr/bin/env bash
# bench/push.sh: how long a `git push` takes until the pushed tree is the deployed one.
#
# A work repo of FILES (default 10,000) small files is pushed to two kinds of target:
#   - seed:      a bare repo whose post-receive is `GIT_WORK_TREE=<dir> git checkout -f main`
#                (the usual one-line hook);
#   - bluegreen: ROOT/blue.git, whose hook is the bluegreen binary, with build command ""
#                and no daemon running (the hook checks out, "builds", makes a release,
#                flips blue/current and notes "daemon not running").
# Time "to deployed": from `git push` start until blue/current names the new release
# (polled every 2 ms) for bluegreen, until the push returns for the seed (its hook's
# checkout is the deploy). The whole push's time is printed too (bluegreen prunes old
# releases after the flip). After each push the script checks that the deployed copy
# (seed work tree / the release behind blue/current) holds the pushed content.
# Two scenarios, RUNS (default 5) runs each, median reported:
#   - first push: a fresh target each run, the whole repo goes over (first-deploy cost);
#   - next push:  the same target, each run a new commit touching one file. The tree id
#                 changes, so bluegreen's build key changes and it checks the whole tree out
#                 again and copies a release; the seed updates one file in place.
# Usage: bench/push.sh   (env: BLUEGREEN_BIN, FILES, RUNS, KEEP_TMP=1 to keep the temp dir)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM
need_tools

FILES="${FILES:-10000}"
RUNS="${RUNS:-5}"
bg_bin
mktmp WORK

# --- the work repo -----------------------------------------------------------------
APP="$WORK/app"
mkdir -p "$APP"
git init -q -b main "$APP"
git -C "$APP" config user.email bench@example.invalid
git -C "$APP" config user.name bench
(
    cd "$APP"
    dirs=$(( (FILES + 99) / 100 ))
    for ((d = 0; d < dirs; d++)); do mkdir -p "src/d$(printf %03d "$d")"; done
    awk -v n="$FILES" 'BEGIN { for (i = 0; i < n; i++) {
        f = sprintf("src/d%03d/f%05d.txt", int(i / 100), i); print "file " i " of the bench repo" > f; close(f) } }'
    echo v0 >VERSION
    git add -A
    git commit -qm "v0: $FILES files"
)
echo "work repo: $(git -C "$APP" ls-files | wc -l) files, $(du -sh --exclude=.git "$APP" | cut -f1)" >&2

# --- targets -----------------------------------------------------------------------
new_seed() { # DIR: a bare repo + work tree with the usual one-line checkout hook ("seed" below)
    local dir="$1"
    git init -q --bare -b main "$dir/seed.git"
    mkdir -p "$dir/www"
    cat >"$dir/seed.git/hooks/post-receive" <<EOF
#!/bin/sh
GIT_WORK_TREE=$dir/www git checkout -f main
EOF
    chmod +x "$dir/seed.git/hooks/post-receive"
}

new_bluegreen() { # DIR: a bluegreen root, build "", no daemon
    make_root "$1/root" "" "$BG sample-app"
}

deployed_ok() { # METHOD DIR: the deployed copy has this commit's VERSION
    local want; want="$(cat "$APP/VERSION")"
    case "$1" in
    seed) [[ "$(cat "$2/www/VERSION")" == "$want" ]] ;;
    bluegreen)
        local cur="$2/root/blue/current"
        [[ -f "$cur/.bluegreen-release.json" ]] &&
            grep -q "$(git -C "$APP" rev-parse HEAD)" "$cur/.bluegreen-release.json" &&
            [[ "$(cat "$cur/VERSION")" == "$want" ]]
        ;;
    esac
}

# wait_flip LINK OLD: prints the time at which LINK stops naming OLD (polled every 2 ms).
wait_flip() {
    python3 -c 'import os, sys, time
link, old = sys.argv[1], sys.argv[2]
while True:
    try: now = os.readlink(link)
    except OSError: now = ""
    if now and now != old: break
    time.sleep(0.002)
print("%.6f" % time.time())' "$1" "$2"
}

push_to() { # METHOD DIR -> prints "<s to deployed> <s for the whole push>"
    local method="$1" dir="$2" url t0 t1 poller="" tflip
    case "$method" in
    seed) url="$dir/seed.git" ;;
    bluegreen)
        url="$dir/root/blue.git"
        wait_flip "$dir/root/blue/current" "$(readlink "$dir/root/blue/current" || echo none)" >"$dir/flip.t" &
        poller=$!
        sleep 0.2 # the poller is up
        ;;
    esac
    t0=$(now)
    git -C "$APP" push -q "$url" main >"$dir/push.log" 2>&1 || { cat "$dir/push.log" >&2; [[ -z $poller ]] || kill "$poller" 2>/dev/null; return 1; }
    t1=$(now)
    deployed_ok "$method" "$dir" || { echo "$method: deployed copy is not the pushed commit" >&2; cat "$dir/push.log" >&2; [[ -z $poller ]] || kill "$poller" 2>/dev/null; return 1; }
    if [[ -n $poller ]]; then wait "$poller"; tflip=$(cat "$dir/flip.t"); else tflip=$t1; fi
    awk -v a="$t0" -v b="$t1" -v f="$tflip" 'BEGIN { printf "%.4f/%.4f\n", f - a, b - a }'
}

declare -A RESULTS
bump=0
touch_one() { # a new commit touching one file, so the tree (and build key) changes
    bump=$((bump + 1))
    echo "v$bump" >"$APP/VERSION"
    echo "bump $bump" >>"$APP/src/d000/f00000.txt"
    git -C "$APP" commit -qam "v$bump"
}

# Runs alternate between the methods (and which goes first), so drift on a shared
# machine (page cache, other jobs) hits both alike.
declare -A TIMES
order() { if (($1 % 2)); then echo seed bluegreen; else echo bluegreen seed; fi; }

# first push: a fresh target each run
for ((r = 1; r <= RUNS; r++)); do
    touch_one
    for method in $(order "$r"); do
        # a new folder each run, all removed at the end: on this VM's ext4, file creation
        # right after an `rm -rf` of a big tree is several times slower (kernel time)
        dir="$WORK/first-$method-$r"; mkdir -p "$dir"
        if [[ $method == seed ]]; then new_seed "$dir"; else new_bluegreen "$dir"; fi
        sync
        TIMES["first,$method"]+="$(push_to "$method" "$dir") "
    done
done

# next push: the same target, one file changed per run (after one warm-up push)
for method in seed bluegreen; do
    dir="$WORK/next-$method"; mkdir -p "$dir"
    if [[ $method == seed ]]; then new_seed "$dir"; else new_bluegreen "$dir"; fi
done
touch_one
for method in seed bluegreen; do push_to "$method" "$WORK/next-$method" >/dev/null; done
for ((r = 1; r <= RUNS; r++)); do
    touch_one
    for method in $(order "$r"); do
        sync
        TIMES["next,$method"]+="$(push_to "$method" "$WORK/next-$method") "
    done
done
tail -n 6 "$WORK/next-bluegreen/push.log" | sed 's/^/  last bluegreen push: /' >&2

declare -A FLIP
for sc in first next; do
    for method in seed bluegreen; do
        echo "$sc push $method (s to deployed/s whole push): ${TIMES[$sc,$method]}" >&2
        FLIP["$sc,$method"]="$(tr ' ' '\n' <<<"${TIMES[$sc,$method]}" | grep . | cut -d/ -f1 | median)"
        RESULTS["$sc,$method"]="$(tr ' ' '\n' <<<"${TIMES[$sc,$method]}" | grep . | cut -d/ -f2 | median)"
    done
done

echo
echo "### push.sh: git push start to deployed, $FILES files, median of $RUNS runs"
echo
echo "| scenario | method | median s to deployed | ratio vs seed | median s whole push |"
echo "| --- | --- | ---: | ---: | ---: |"
for sc in first next; do
    for method in seed bluegreen; do
        printf '| %s push | %s | %.3f | %.2f | %.3f |\n' "$sc" "$method" "${FLIP[$sc,$method]}" \
            "$(awk -v a="${FLIP[$sc,$method]}" -v b="${FLIP[$sc,seed]}" 'BEGIN { print a / b }')" "${RESULTS[$sc,$method]}"
    done
done
echo
echo "deployed = bluegreen: blue/current renamed to the new release (polled every 2 ms);"
echo "seed: its post-receive \`git checkout -f\` returned, i.e. the push returned (it rewrites the live tree in place)."
