#!/usr/bin/env bash
# bench/push.sh: how long a `git push` takes until the pushed tree is the deployed one.
#
# A work repo of FILES (default 10,000) small files is pushed to two kinds of target:
#   - seed:      a bare repo whose post-receive is `GIT_WORK_TREE=<dir> git checkout -f main`
#                (the seed workshop's method);
#   - bluegreen: ROOT/blue.git, whose hook is the bluegreen binary, with build command ""
#                and no daemon running (the hook checks out, "builds", makes a release,
#                flips blue/current and notes "daemon not running").
# Both hooks finish before `git push` returns, so the time is `git push` start to end;
# after each push the script checks that the deployed copy (seed work tree / the release
# behind blue/current) holds the pushed content.
# Two scenarios, RUNS (default 5) runs each, median reported:
#   - first push: a fresh target each run, the whole repo goes over (first-deploy cost);
#   - next push:  the same target, each run a new commit touching one file. The tree id
#                 changes, so bluegreen's build key changes and it checks the whole tree out
#                 again and copies a release; the seed updates one file in place.
# Usage: bench/push.sh   (env: BLUEGREEN_BIN, FILES, RUNS, KEEP_TMP=1 to keep the temp dir)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT INT TERM

FILES="${FILES:-10000}"
RUNS="${RUNS:-5}"
bg_bin
WORK="$(mktmp)"

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
new_seed() { # DIR: a bare repo + work tree, the seed workshop's hook
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

push_to() { # METHOD DIR -> prints seconds
    local method="$1" dir="$2" url t0 t1
    case "$method" in
    seed) url="$dir/seed.git" ;;
    bluegreen) url="$dir/root/blue.git" ;;
    esac
    t0=$(now)
    git -C "$APP" push -q "$url" main >"$dir/push.log" 2>&1 || { cat "$dir/push.log" >&2; return 1; }
    t1=$(now)
    deployed_ok "$method" "$dir" || { echo "$method: deployed copy is not the pushed commit" >&2; cat "$dir/push.log" >&2; return 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
}

declare -A RESULTS
bump=0
touch_one() { # a new commit touching one file, so the tree (and build key) changes
    bump=$((bump + 1))
    echo "v$bump" >"$APP/VERSION"
    echo "bump $bump" >>"$APP/src/d000/f00000.txt"
    git -C "$APP" commit -qam "v$bump"
}

for method in seed bluegreen; do
    # first push: fresh target each run
    times=()
    for ((r = 1; r <= RUNS; r++)); do
        touch_one
        dir="$WORK/first-$method-$r"; mkdir -p "$dir"
        if [[ $method == seed ]]; then new_seed "$dir"; else new_bluegreen "$dir"; fi
        sync
        times+=("$(push_to "$method" "$dir")")
        rm -rf "$dir"
    done
    RESULTS["first,$method"]="$(printf '%s\n' "${times[@]}" | median)"
    echo "first push $method: ${times[*]}" >&2

    # next push: same target, one file changed per run (after one warm-up push)
    dir="$WORK/next-$method"; mkdir -p "$dir"
    if [[ $method == seed ]]; then new_seed "$dir"; else new_bluegreen "$dir"; fi
    touch_one; push_to "$method" "$dir" >/dev/null
    times=()
    for ((r = 1; r <= RUNS; r++)); do
        touch_one
        sync
        times+=("$(push_to "$method" "$dir")")
    done
    RESULTS["next,$method"]="$(printf '%s\n' "${times[@]}" | median)"
    echo "next push $method: ${times[*]}" >&2
    [[ $method == bluegreen ]] && tail -n 8 "$dir/push.log" | sed 's/^/  last push output: /' >&2
done

echo
echo "### push.sh: git push start to deployed, $FILES files, median of $RUNS runs"
echo
echo "| scenario | method | median s | ratio vs seed |"
echo "| --- | --- | ---: | ---: |"
for sc in first next; do
    for method in seed bluegreen; do
        m="${RESULTS[$sc,$method]}"
        s="${RESULTS[$sc,seed]}"
        printf '| %s push | %s | %.3f | %.2f |\n' "$sc" "$method" "$m" "$(awk -v a="$m" -v b="$s" 'BEGIN { print a / b }')"
    done
done
