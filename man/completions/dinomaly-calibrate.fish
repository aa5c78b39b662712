complete -c dinomaly-calibrate -s c -l checkpoint -d 'The checkpoint that scored the lines (written by dinomaly-train)' -r -F
complete -c dinomaly-calibrate -s o -l output -d 'Where to write the calibrated checkpoint (not the input checkpoint)' -r -F
complete -c dinomaly-calibrate -s i -l input -d 'Read the scored lines from FILE instead of stdin (\'-\' is stdin)' -r -F
complete -c dinomaly-calibrate -l rule -d 'How thresholds are chosen: target-fpr (the lowest threshold whose false-positive rate on the good images is at most --target-fpr; good images only are enough) or f1 (F1-optimal; needs defective lines, and for the pixel threshold their masks)' -r -f -a "target-fpr\t'The lowest threshold with FPR <= --target-fpr on the good images'
f1\t'The F1-optimal threshold (needs defective lines)'"
complete -c dinomaly-calibrate -l target-fpr -d 'False-positive rate aimed at on good images, in [0, 1): the threshold is np.quantile(good, 1 - F, method="inverted_cdf"). Needs at least 1/F good images per class (warned when fewer). Also the pixel rule of --rule f1 when masks are missing' -r
complete -c dinomaly-calibrate -s q -l quiet -d 'No progress bar and no notes on stderr (errors are still printed)'
complete -c dinomaly-calibrate -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dinomaly-calibrate -s V -l version -d 'Print version'
