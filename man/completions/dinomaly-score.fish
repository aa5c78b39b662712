complete -c dinomaly-score -s c -l checkpoint -d 'Checkpoint: from dinomaly-train, the official repository\'s saved state dict, or anomalib 2.x Dinomaly weights' -r -F
complete -c dinomaly-score -l kind -d 'Checkpoint kind (default: detected from the file)' -r -f -a "dinomaly\t'Written by dinomaly-train'
official\t'The official repository\'s saved ViTill state dict'
anomalib\t'anomalib 2.x Dinomaly (Lightning .ckpt or torch state dict)'"
complete -c dinomaly-score -l weights -d 'Encoder weights for dinomaly-train checkpoints (default: the cache or a download, by the backbone name the checkpoint records). Must be the file the model was trained with (sha256 checked)' -r -F
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
complete -c dinomaly-score -l layers -d 'Target layers of official/anomalib checkpoints (default per size)' -r
complete -c dinomaly-score -l maps-dir -d 'Write each anomaly map as float32 .npy (map size) into DIR' -r -F
complete -c dinomaly-score -l map-size -d 'Side of the anomaly map: N or HxW (official: 256)' -r
complete -c dinomaly-score -l max-ratio -d 'Image score = mean of the top fraction of map pixels (0 = max)' -r
complete -c dinomaly-score -l threshold -d 'Add "anomalous": score > T to each line' -r
complete -c dinomaly-score -l fail-above -d 'Exit with status 1 when any score exceeds T (for alerting)' -r
complete -c dinomaly-score -l skip-existing -d 'Skip inputs whose image already has a scored line in this results file (for cron reruns that append: `--skip-existing r.jsonl >> r.jsonl`). A partial last line left by a killed run is cut off first' -r -F
complete -c dinomaly-score -l shard -d 'Score only shard I of N (1-based): a contiguous block of the inputs, so the outputs of shards 1..N concatenated equal a single run\'s' -r
complete -c dinomaly-score -l batch -d 'Images per batch' -r
complete -c dinomaly-score -l precision -d 'Precision of the encoder and decoder: fp32 (the references\') or bf16 (faster on CUDA; maps within ~1e-2 of fp32)' -r -f -a "fp32\t'float32 everywhere (the references\' setting)'
bf16\t'Encoder and decoder in bfloat16 (for CUDA; maps and scores are still computed in float32 from the bfloat16 features)'"
complete -c dinomaly-score -l on-error -d 'What to do with an image that cannot be scored: stop (exit 2 after flushing what was done) or skip (a line with "error" instead of a score)' -r -f -a "stop\t'Stop with exit code 2 after flushing what was done'
skip\t'Report the sample on stderr and go on'"
complete -c dinomaly-score -l device -d 'Where to compute: auto (CUDA when present, else CPU), cpu, cuda or cuda:N' -r
complete -c dinomaly-score -l overlay -d 'Also write a PNG heatmap over the image per input (needs --maps-dir)'
complete -c dinomaly-score -s q -l quiet -d 'No progress bar and no notes on stderr (errors are still printed)'
complete -c dinomaly-score -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dinomaly-score -s V -l version -d 'Print version'
