complete -c dinomaly-metrics -s i -l input -d 'Read records from FILE instead of stdin (\'-\' is stdin)' -r -F
complete -c dinomaly-metrics -l format -d 'Output format on stdout' -r -f -a "json\t'One JSON document: settings, per-class metrics and thresholds, the mean, warnings'
csv\t'One row per class then `mean`; fractions, empty cells for null'
markdown\t'The paper\'s table: percent, one decimal, classes as rows, mean last'"
complete -c dinomaly-metrics -l plots -d 'Write ROC and PR curves per class (image and pixel level) and the PRO curve of AUPRO (up to --fpr-limit, its area shaded) as SVG files into DIR (created if missing): CLASS-roc.svg, CLASS-pr.svg, CLASS-pro.svg' -r -F
complete -c dinomaly-metrics -l fpr-limit -d 'False positive rate limit of both AUPRO variants, in (0, 1] (official: 0.3; official AUPRO keeps points with FPR < limit)' -r
complete -c dinomaly-metrics -l mask-threshold -d 'A GT pixel is anomalous when its mask value in [0, 1] is greater than this, in [0, 1): 0 is the official rule, 0.5 the common one' -r
complete -c dinomaly-metrics -l resize -d 'Side the mask is resized to before the centre crop, as the images were (default: the "map_geometry" dinomaly-score writes beside each map, else 448)' -r
complete -c dinomaly-metrics -l crop -d 'Side of the centre crop of the resized mask, the model\'s input (default: the lines\' "map_geometry", else 392)' -r
complete -c dinomaly-metrics -l target-fpr -d 'Also report, per class and overall, the threshold reaching this false positive rate on the normal images, in [0, 1) (e.g. 0.01), with the FPR and TPR it reaches: in JSON under "thresholds", in CSV three more columns (the mean row: all images pooled), in markdown a second table' -r
complete -c dinomaly-metrics -l image-only -d 'Image metrics only: maps and masks are neither needed nor read'
complete -c dinomaly-metrics -s q -l quiet -d 'No progress bar and no notes on stderr (errors are still printed)'
complete -c dinomaly-metrics -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dinomaly-metrics -s V -l version -d 'Print version'
