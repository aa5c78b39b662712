#!/usr/bin/env bash
# Score one input in N shards, JOBS at a time, then concatenate the shards' outputs in
# shard order: the result is line for line what one `dinomaly-score` run over the whole
# input writes (dinomaly-score --shard I/N takes the I-th contiguous block, 1-based).
# Shards run under GNU parallel when it is installed (`apt-get install parallel`, `brew
# install parallel`), else as background jobs of this script (JOBS at once, no remote
# hosts); the output is the same.
#
#   shard-parallel.sh -c MODEL -n SHARDS [-j JOBS] [-g GPUS] [-o OUT] INPUT [-- dinomaly-score flags]
#
#   -c MODEL   checkpoint (any kind dinomaly-score reads)
#   -n SHARDS  number of shards (more shards than jobs is fine: a failed or killed run with
#              -o is resumed shard by shard by the same command, finished shards are kept)
#   -j JOBS    shards scored at once (default: SHARDS)
#   -g GPUS    comma-separated CUDA device numbers, one per job slot in turn, e.g. 0,1,2,3
#              with -j 4 (default: --device as given after --, else auto)
#   -o OUT     the concatenated JSON lines (default: stdout); the shards go to OUT.shards/
#              (or a temporary folder for stdout) and are removed once concatenated
#   INPUT      JSON lines or image paths, one per line, or a feature store (*.safetensors,
#              scored with --features)
# Flags after -- go to every dinomaly-score (--maps-dir DIR, --weights W, --threshold T,
# --batch N, ...). Every shard writes its maps into the same --maps-dir.
# Exit status: 0; 1 when a shard saw a score above --fail-above (all shards still run and
# OUT is written); 2 on an error (OUT is not written).
# Environment: DINOMALY_BIN as in cron-score.sh; PARALLEL, GNU parallel's own options
# (e.g. PARALLEL="-S host1,host2 --workdir ." to spread shards over machines that share
# the file system and have the tools at the same path; needs GNU parallel).
set -euo pipefail

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
here=$(dirname "$self")
if [ -z "${DINOMALY_BIN:-}" ] && [ -x "$here/../target/release/dinomaly-score" ]; then
    DINOMALY_BIN=$here/../target/release
fi
export DINOMALY_BIN
score=${DINOMALY_BIN:+$DINOMALY_BIN/}dinomaly-score

part_name() { printf '%s/part-%04d.jsonl' "$1" "$2"; }

# Worker, run by parallel: --one-shard PARTS I N SLOT GPUS MODEL INPUT [score flags].
if [ "${1:-}" = "--one-shard" ]; then
    parts=$2 i=$3 n=$4 slot=$5 gpus=$6 model=$7 input=$8
    shift 8
    part=$(part_name "$parts" "$i")
    [ -f "$part" ] && exit 0
    source_flags=(-i "$input")
    case $input in *.safetensors) source_flags=(--features "$input") ;; esac
    device=()
    if [ -n "$gpus" ]; then
        IFS=, read -r -a list <<<"$gpus"
        device=(--device "cuda:${list[$(((slot - 1) % ${#list[@]}))]}")
    fi
    set +e
    "$score" -c "$model" "${source_flags[@]}" --shard "$i/$n" -q "${device[@]}" "$@" >"$part.tmp"
    rc=$?
    set -e
    # 1 is a complete run that saw a score above --fail-above: keep it, remember it.
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ]; then
        mv "$part.tmp" "$part"
        [ "$rc" -eq 0 ] || : >"$part.above"
        exit 0
    fi
    rm -f "$part.tmp"
    echo "shard-parallel.sh: shard $i/$n failed (dinomaly-score status $rc)" >&2
    exit 2
fi

usage() {
    sed -n 's/^#   \(shard-parallel.sh -c \)/\1/p' "$0" >&2
    exit 2
}

model='' shards='' jobs='' gpus='' out=''
while getopts "c:n:j:g:o:h" opt; do
    case $opt in
        c) model=$OPTARG ;;
        n) shards=$OPTARG ;;
        j) jobs=$OPTARG ;;
        g) gpus=$OPTARG ;;
        o) out=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
input=$1
shift
[ "${1:-}" = "--" ] && shift
if [ -z "$model" ] || [ -z "$shards" ]; then usage; fi
case $shards in '' | *[!0-9]* | 0) echo "shard-parallel.sh: -n takes a positive number" >&2; exit 2 ;; esac
jobs=${jobs:-$shards}
case $jobs in '' | *[!0-9]* | 0) echo "shard-parallel.sh: -j takes a positive number" >&2; exit 2 ;; esac
[ -r "$input" ] || { echo "shard-parallel.sh: cannot read $input" >&2; exit 2; }
[ -r "$model" ] || { echo "shard-parallel.sh: cannot read $model" >&2; exit 2; }
# moreutils also ships a `parallel`, with other options: only GNU parallel is used.
gnu_parallel=''
if parallel --version 2>/dev/null | grep -q 'GNU parallel'; then
    gnu_parallel=1
elif [ -n "${PARALLEL:-}" ]; then
    echo "shard-parallel.sh: PARALLEL is set but GNU parallel is not installed (apt-get install parallel)" >&2
    exit 2
fi

if [ -n "$out" ]; then
    parts=$out.shards
    mkdir -p "$parts"
else
    parts=$(mktemp -d)
    trap 'rm -rf "$parts"' EXIT
fi
parts=$(cd "$parts" && pwd)
# Finished shards are reused only by the same command on the same files: a different
# input, model, shard count or flag starts afresh.
key=$(printf '%s\n' "$model" "$input" "$shards" "$@"; stat -L -c '%n %s %Y' -- "$model" "$input")
if [ -f "$parts/run.key" ] && [ "$(cat "$parts/run.key")" != "$key" ]; then
    echo "shard-parallel.sh: $parts holds shards of another run; starting afresh" >&2
    rm -f "$parts"/part-*
fi
printf '%s\n' "$key" >"$parts/run.key"

# Without GNU parallel: JOBS background loops; loop k (the job slot, 1..JOBS) scores
# shards k, k+JOBS, k+2*JOBS, ... one after the other, and stops starting new ones once
# any shard failed (the `failed` marker), as parallel's --halt soon,fail=1 does.
run_shards() {
    local slot pids=() status=0
    rm -f "$parts/failed"
    for ((slot = 1; slot <= jobs && slot <= shards; slot++)); do
        (
            for ((i = slot; i <= shards; i += jobs)); do
                [ ! -e "$parts/failed" ] || exit 2
                "$self" --one-shard "$parts" "$i" "$shards" "$slot" "$gpus" "$model" "$input" "$@" ||
                    { : >"$parts/failed"; exit 2; }
            done
        ) &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=2; done
    rm -f "$parts/failed"
    return "$status"
}

# -q: parallel passes every argument as one word (paths and flags with spaces survive).
# {} is the shard number, {%} the job slot (1..JOBS). --halt: stop at the first failure.
if [ -n "$gnu_parallel" ]; then
    # shellcheck disable=SC2046 # one shard number per word
    parallel -q --halt soon,fail=1 -j "$jobs" \
        "$self" --one-shard "$parts" '{}' "$shards" '{%}' "$gpus" "$model" "$input" "$@" \
        ::: $(seq 1 "$shards") && ok=1 || ok=''
else
    run_shards "$@" && ok=1 || ok=''
fi
if [ -z "$ok" ]; then
    if [ -n "$out" ]; then
        echo "shard-parallel.sh: not all shards finished; the finished ones are kept in $parts: run the same command again to resume (remove $parts to start afresh)" >&2
    else
        echo "shard-parallel.sh: not all shards finished" >&2
    fi
    exit 2
fi

# Concatenate in shard order, all or nothing.
above=0
files=()
for i in $(seq 1 "$shards"); do
    part=$(part_name "$parts" "$i")
    [ -f "$part" ] || { echo "shard-parallel.sh: $part is missing" >&2; exit 2; }
    files+=("$part")
    [ ! -e "$part.above" ] || above=1
done
if [ -n "$out" ]; then
    cat "${files[@]}" >"$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$parts"
else
    cat "${files[@]}"
fi
exit "$above"
