#!/bin/sh
# Mean ± standard deviation of dinomaly-metrics CSV tables (one per seed or run).
#
#   summarize.sh table CSV...      one row per class, then the class mean: each of the
#                                  seven metrics as mean ± std over the files
#   summarize.sh header            the header of a one-row-per-variant table
#   summarize.sh row NAME CSV...   one row of that table: the class-mean row of the
#                                  files, mean ± std over them, and how many files
#
# Input: `dinomaly-metrics --format csv` (columns class,images,anomalous,i_auroc,...,aupro;
# fractions; an empty cell is a null metric; the last row is `mean`). Output: markdown,
# percent with one decimal as the paper prints them. The std is the sample standard
# deviation (n - 1); with one file only the mean is printed. The `Mean` row is the
# mean over files of each file's class mean (so its std is the seed-to-seed spread of
# the dataset number, not an average of per-class spreads). A metric missing or null in
# some file is averaged over the files that have it and marked with `*`; one missing
# everywhere is `n/a`. Needs only a POSIX shell and awk.
set -eu

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
mode=$1
shift
case $mode in
    header)
        printf '| Variant | I-AUROC | I-AP | I-F1max | P-AUROC | P-AP | P-F1max | AUPRO | Runs |\n'
        printf '|:--|--:|--:|--:|--:|--:|--:|--:|--:|\n'
        exit 0
        ;;
    table)
        [ $# -ge 1 ] || usage
        name=
        ;;
    row)
        [ $# -ge 2 ] || usage
        name=$1
        shift
        ;;
    *) usage ;;
esac
for f in "$@"; do
    [ -r "$f" ] || { echo "summarize.sh: cannot read $f" >&2; exit 2; }
done

awk -F, -v mode="$mode" -v name="$name" -v nfiles=$# '
BEGIN {
    nm = split("i_auroc i_ap i_f1max p_auroc p_ap p_f1max aupro", key, " ")
    split("I-AUROC I-AP I-F1max P-AUROC P-AP P-F1max AUPRO", title, " ")
    nclass = 0
}
FNR == 1 {
    for (m = 1; m <= nm; m++) col[m] = 0
    for (i = 1; i <= NF; i++)
        for (m = 1; m <= nm; m++)
            if ($i == key[m]) col[m] = i
    if ($1 != "class") { printf "summarize.sh: %s is not a dinomaly-metrics CSV table\n", FILENAME > "/dev/stderr"; bad = 1; exit 2 }
    next
}
{
    c = $1
    if (!(c in seen)) { seen[c] = 1; if (c != "mean") order[++nclass] = c }
    for (m = 1; m <= nm; m++) {
        if (col[m] == 0 || $(col[m]) == "") continue
        k = c SUBSEP m
        n[k]++
        v[k, n[k]] = $(col[m]) * 100
    }
}
function cell(c, m,    k, i, s, mean, ss, out) {
    k = c SUBSEP m
    if (!(k in n)) return "n/a"
    s = 0
    for (i = 1; i <= n[k]; i++) s += v[k, i]
    mean = s / n[k]
    out = sprintf("%.1f", mean)
    if (n[k] > 1) {
        ss = 0
        for (i = 1; i <= n[k]; i++) ss += (v[k, i] - mean) ^ 2
        out = out sprintf(" ± %.1f", sqrt(ss / (n[k] - 1)))
    }
    if (n[k] < nfiles) out = out "*"
    return out
}
function line(label, c,    m, s) {
    s = "| " label " |"
    for (m = 1; m <= nm; m++) s = s " " cell(c, m) " |"
    return s
}
END {
    if (bad) exit 2
    if (!("mean" in seen)) { print "summarize.sh: no `mean` row in the input" > "/dev/stderr"; exit 2 }
    if (mode == "row") { printf "%s %d |\n", line(name, "mean"), nfiles; exit 0 }
    printf "| Class |"
    for (m = 1; m <= nm; m++) printf " %s |", title[m]
    printf "\n|:--|"
    for (m = 1; m <= nm; m++) printf "--:|"
    printf "\n"
    for (i = 1; i <= nclass; i++) print line(order[i], order[i])
    print line("Mean", "mean")
    if (nfiles > 1) printf "\n%d runs: mean ± sample standard deviation, percent; * = null or missing in some runs.\n", nfiles
}' "$@"
