#!/usr/bin/env bash
# Score the images of a folder that are not scored yet, append their lines to a results
# file, and alert when one scores above a threshold. Meant for cron: silent when all is
# well, prints the alert (so cron mails it) and exits 1 when an image is above the
# threshold, exits 2 on an error.
#
#   cron-score.sh -c MODEL -r RESULTS [-t THRESHOLD] [-l LOG] [-m ADDRESS] [-x COMMAND]
#                 [-a MINUTES] [-e EXTENSIONS] DIR [-- dinomaly-score flags]
#
#   -c MODEL      checkpoint from dinomaly-train (or --kind official/anomalib weights)
#   -r RESULTS    JSON-lines results file; new lines are appended, images already in it
#                 (with a score or an "error") are skipped (dinomaly-score --skip-existing)
#   -t THRESHOLD  alert when a new image scores above it (dinomaly-score --fail-above;
#                 lines get "anomalous"); pick it with dinomaly-metrics --target-fpr
#   -l LOG        append one time-stamped line per run and per alert to this file
#   -m ADDRESS    also mail the alert (needs `mail` or `sendmail`)
#   -x COMMAND    also run COMMAND with the alert text on stdin (a webhook, a pager)
#   -a MINUTES    only images older than this, so files still being copied wait for the
#                 next run (default 1; 0 takes everything)
#   -e EXTS       image extensions, comma-separated (default png,jpg,jpeg,bmp,tif,tiff)
#   DIR           folder searched recursively (use an absolute path: the image paths in
#                 RESULTS are the ones find prints, and --skip-existing matches them)
# Environment: DINOMALY_BIN, the folder of the dinomaly tools (default: this checkout's
# target/release when built, else the PATH).
#
# crontab line (every 10 minutes; cron mails what the script prints, i.e. alerts and
# errors only, to MAILTO):
#   MAILTO=qa@example.com
#   */10 * * * * /opt/dinomaly/examples/cron-score.sh -c /srv/models/line3.safetensors -r /srv/results/line3.jsonl -t 0.31 -l /var/log/dinomaly-line3.log /data/incoming/line3
#
# Two runs never score at once (flock on RESULTS.lock; a run that finds the lock taken
# logs it and exits 0). An unreadable image gets one "error" line and is not tried again
# (so a broken file neither stops later runs nor adds a line to RESULTS every run); add
# `-- --retry-errors` to a run to try those images again. A run killed half-way leaves at
# most a partial last line, which the next run cuts off before appending.
set -euo pipefail

usage() {
    sed -n '7,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

model='' results='' threshold='' log='' mailto='' hook=''
min_age=1 exts=png,jpg,jpeg,bmp,tif,tiff
while getopts "c:r:t:l:m:x:a:e:h" opt; do
    case $opt in
        c) model=$OPTARG ;;
        r) results=$OPTARG ;;
        t) threshold=$OPTARG ;;
        l) log=$OPTARG ;;
        m) mailto=$OPTARG ;;
        x) hook=$OPTARG ;;
        a) min_age=$OPTARG ;;
        e) exts=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
dir=$1
shift
[ "${1:-}" = "--" ] && shift
extra=("$@")
if [ -z "$model" ] || [ -z "$results" ]; then usage; fi
[ -d "$dir" ] || { echo "cron-score.sh: $dir is not a folder" >&2; exit 2; }
case $min_age in '' | *[!0-9]*) echo "cron-score.sh: -a takes whole minutes" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${DINOMALY_BIN:-}" ] && [ -x "$here/../target/release/dinomaly-score" ]; then
    DINOMALY_BIN=$here/../target/release
fi
score=${DINOMALY_BIN:+$DINOMALY_BIN/}dinomaly-score

stamp() { date '+%Y-%m-%dT%H:%M:%S%z'; }
note() {
    if [ -n "$log" ]; then
        printf '%s %s\n' "$(stamp)" "$*" >>"$log"
    fi
}

# One run at a time per results file.
exec 9>>"$results.lock"
if command -v flock >/dev/null && ! flock -n 9; then
    note "$dir: the previous run is still scoring; skipped"
    exit 0
fi

# find's name tests for the extensions, case-insensitive: \( -iname '*.png' -o ... \)
names=()
IFS=, read -r -a ext_list <<<"$exts"
for e in "${ext_list[@]}"; do
    [ ${#names[@]} -eq 0 ] || names+=(-o)
    names+=(-iname "*.$e")
done
age=()
[ "$min_age" -gt 0 ] && age=(-mmin "+$min_age")

flags=(-c "$model" --skip-existing "$results" --on-error skip -q)
[ -n "$threshold" ] && flags+=(--threshold "$threshold" --fail-above "$threshold")

# Lines already complete (a partial last line is not counted, and dinomaly-score cuts it off).
before=0
[ -f "$results" ] && before=$(wc -l <"$results")

set +e
find "$dir" -type f \( "${names[@]}" \) "${age[@]}" -print | LC_ALL=C sort |
    "$score" "${flags[@]}" "${extra[@]}" >>"$results"
status=("${PIPESTATUS[@]}")
set -e
find_rc=${status[0]} score_rc=${status[2]}

new=$(tail -n +"$((before + 1))" "$results")
scored=0 failed=0
if [ -n "$new" ]; then
    scored=$(grep -c '"score":' <<<"$new" || true)
    failed=$(grep -c '"error":' <<<"$new" || true)
fi
[ "$find_rc" -eq 0 ] || echo "cron-score.sh: find reported problems under $dir (status $find_rc)" >&2
if [ "$score_rc" -eq 2 ]; then
    note "$dir: dinomaly-score failed (status 2) after $scored new images"
    echo "cron-score.sh: dinomaly-score failed on $dir (status 2); see the messages above" >&2
    exit 2
fi
[ "$failed" -eq 0 ] || note "$dir: $failed images could not be read (lines with \"error\"; not tried again unless a run adds -- --retry-errors)"
note "$dir: scored $scored new images"
[ "$score_rc" -eq 1 ] || exit 0

# Above the threshold: list the new lines marked anomalous, highest score first.
if command -v jq >/dev/null; then
    hits=$(jq -r 'select(.anomalous == true) | "\(.score)\t\(.image)"' <<<"$new" | sort -g -r)
else
    hits=$(grep '"anomalous":true' <<<"$new")
fi
count=$(grep -c . <<<"$hits" || true)
subject="dinomaly: $count new images above $threshold in $dir"
alert=$(printf '%s\n%s\n' "$subject" "$hits")
printf '%s\n' "$alert"
if [ -n "$log" ]; then
    while IFS= read -r line; do note "ALERT $line"; done <<<"$hits"
fi
if [ -n "$mailto" ]; then
    if command -v mail >/dev/null; then
        printf '%s\n' "$hits" | mail -s "$subject" "$mailto"
    elif command -v sendmail >/dev/null; then
        printf 'To: %s\nSubject: %s\n\n%s\n' "$mailto" "$subject" "$hits" | sendmail -t
    else
        echo "cron-score.sh: no mail or sendmail command; alert not mailed" >&2
    fi
fi
if [ -n "$hook" ]; then
    printf '%s\n' "$alert" | sh -c "$hook" || echo "cron-score.sh: the -x command failed" >&2
fi
exit 1
