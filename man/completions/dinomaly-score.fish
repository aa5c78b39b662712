complete -c dinomaly-score -s c -l checkpoint -d 'Checkpoint: from dinomaly-train, the official repository\'s saved state dict, or anomalib 2.x Dinomaly weights' -r -F
complete -c dinomaly-score -l kind -d 'Checkpoint kind (default: detected from the file)' -r -f -a "dinomaly\t'Written by dinomaly-train'
official\t'The official repository\'s saved ViTill state dict'
anomalib\t'anomalib 2.x Dinomaly (Lightning .ckpt or torch state dict)'"
complete -c dinomaly-score -l weights -d 'Encoder weights for dinomaly-train checkpoints (default: the cache or a download, by the backbone name the checkpoint records). Must be the file the model was trained with (sha256 checked). Refused with official and anomalib checkpoints (they hold their encoder) and with --features (no encoder runs)' -r -F
complete -c dinomaly-score -s i -l input -d 'Read samples from this file instead of stdin (\'-\' is stdin): JSON lines with an "image" field, or one image path per line' -r -F
complete -c dinomaly-score -l dataset -d 'Read samples from a dataset tree instead of stdin' -r -F
complete -c dinomaly-score -l layout -d 'Layout of --dataset' -r -f -a "mvtec\t'`<root>/<class>/{train,test}/<defect>/*`, masks in `ground_truth/<defect>/*_mask.png`'
visa\t'VisA: the 1cls split csv over the raw download, or the reorganised tree'
realiad\t'Real-IAD: `realiad_jsons` lists over `realiad_1024` images'
folder\t'`<root>/<class>/good/*` normal, `<root>/<class>/<defect>/*` anomalous'"
complete -c dinomaly-score -l split -d 'Split of --dataset to read' -r -f -a "train\t'Normal training images'
test\t'Test images, normal and anomalous, with masks'"
complete -c dinomaly-score -l classes -d 'Only these classes of --dataset (comma-separated; default all)' -r
complete -c dinomaly-score -l features -d 'Score the rows of this feature store (made with the checkpoint\'s encoder settings) instead of reading images; - reads it from stdin' -r -F
complete -c dinomaly-score -l layers -d 'Target layers of official/anomalib checkpoints (default per size). Refused with dinomaly-train checkpoints, which record theirs' -r
complete -c dinomaly-score -l maps-dir -d 'Write each anomaly map as float32 .npy (map size) into DIR' -r -F
complete -c dinomaly-score -l map-space -d 'Where --maps-dir maps lie: crop (the model\'s centre crop at the map size, as the paper evaluates and dinomaly-metrics reads) or photo (the original image\'s pixels; the border the crop cut off is NaN, not inspected). Lines say which in "map_space"' -r -f -a "crop\t'The model\'s centre crop at the map size (the paper\'s evaluation and `dinomaly-metrics` use these)'
photo\t'The original photo, pixel for pixel; the border the crop cut off is NaN (not inspected)'"
complete -c dinomaly-score -l pixel-threshold -d 'Pixel threshold on the maps (default: the checkpoint\'s calibration, per class): each line lists its "regions" above it, in photo pixels, and overlays put it at their midpoint colour. Needs images (refused with --features)' -r
complete -c dinomaly-score -l max-regions -d 'Most regions listed per line, strongest peak first ("regions_omitted" counts the rest)' -r
complete -c dinomaly-score -l map-size -d 'Side of the anomaly map: N or HxW (official: 256). Refused with anomalib checkpoints, whose map is anomalib\'s raw map at the crop size and whose score is taken at 256, as anomalib does' -r
complete -c dinomaly-score -l max-ratio -d 'Image score = mean of the top fraction of map pixels, in [0, 1] (0 = max; default 0.01)' -r
complete -c dinomaly-score -l threshold -d 'Add "anomalous": score > T to each line (with a calibrated checkpoint: instead of the calibrated thresholds)' -r
complete -c dinomaly-score -l fail-above -d 'Exit with status 1 when any score exceeds T (for alerting); stderr then says how many, the highest and the first few images (even with --quiet). Without T: when any line is decided anomalous by the calibrated thresholds (or --threshold); refused with an uncalibrated checkpoint (a T that starts with \'-\' and is not a plain number takes \'=\': --fail-above=-inf). A reader that closes stdout early (`| head`) does not turn this into success: scoring goes on without writing until a score exceeds T' -r
complete -c dinomaly-score -l skip-existing -d 'Skip inputs whose image already has a line in this results file, with a score or an "error" (--retry-errors scores the latter again); for cron reruns that append: `--skip-existing r.jsonl >> r.jsonl`. A partial last line left by a killed run is cut off first' -r -F
complete -c dinomaly-score -l shard -d 'Score only shard I of N (1-based): a contiguous block of the inputs, so the outputs of shards 1..N concatenated equal a single run\'s. Reads all input first (it needs the number of inputs), also from a pipe' -r
complete -c dinomaly-score -l batch -d 'Images (or store rows) per batch' -r
complete -c dinomaly-score -l batch-wait -d 'Live input: milliseconds a partial batch waits for another line before it is scored (0: score what has arrived at once). The default, 50, keeps a burst of lines (a camera\'s images written together) in one batch and adds little to an image\'s latency next to scoring it (README: measured latencies). Ignored for input read whole' -r
complete -c dinomaly-score -l precision -d 'Precision of the encoder and decoder: fp32 (the references\') or bf16 (faster on CUDA; maps within ~1e-2 of fp32)' -r -f -a "fp32\t'float32 everywhere (the references\' setting)'
bf16\t'Encoder and decoder in bfloat16 (for CUDA; maps and scores are still computed in float32 from the bfloat16 features)'"
complete -c dinomaly-score -l on-error -d 'What to do with an input that cannot be scored: stop (exit 2; the lines of the inputs before it are already on stdout) or skip (a line with "error" instead of a score, and go on)' -r -f -a "stop\t'Stop at the first one, with exit status 2'
skip\t'Report it and go on'"
complete -c dinomaly-score -l device -d 'Where to compute: auto (CUDA when present, else CPU), cpu, cuda or cuda:N' -r
complete -c dinomaly-score -l overlay -d 'Also write a PNG heatmap over the image per input (needs --maps-dir and a pixel threshold: the calibration\'s or --pixel-threshold). One colour scale for all images: 0 dark blue, the threshold light green, twice the threshold and above dark red; with --map-space photo it is drawn on the photo, the border the crop cut off hatched grey'
complete -c dinomaly-score -s q -l quiet -d 'No progress bar and no notes on stderr (errors are still printed)'
complete -c dinomaly-score -l retry-errors -d 'With --skip-existing: score again the inputs whose only lines in the results file are "error" lines (by default they are skipped, so a broken image does not add an error line on every run)'
complete -c dinomaly-score -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dinomaly-score -s V -l version -d 'Print version'
