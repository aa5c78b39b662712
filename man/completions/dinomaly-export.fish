complete -c dinomaly-export -s c -l checkpoint -d 'Checkpoint: from dinomaly-train, the official repository\'s saved state dict, or anomalib 2.x Dinomaly weights' -r -F
complete -c dinomaly-export -l kind -d 'Checkpoint kind (default: detected from the file)' -r -f -a "dinomaly\t'Written by dinomaly-train'
official\t'The official repository\'s saved ViTill state dict'
anomalib\t'anomalib 2.x Dinomaly (Lightning .ckpt or torch state dict)'"
complete -c dinomaly-export -l weights -d 'Encoder weights for dinomaly-train checkpoints, as for dinomaly-score (default: the cache or a download by the recorded backbone name; sha256 checked). Refused with official and anomalib checkpoints' -r -F
complete -c dinomaly-export -l layers -d 'Target layers of official/anomalib checkpoints (default per size), as for dinomaly-score' -r
complete -c dinomaly-export -s o -l output -d 'The .onnx file to write (written to a temporary name, then renamed)' -r -F
complete -c dinomaly-export -l batch -d 'Batch size: 0 is a dynamic batch axis ("batch"); N >= 1 a static one (TensorRT and OpenVINO plan for a fixed shape)' -r
complete -c dinomaly-export -l precision -d 'fp32, or fp16: float16 weights and encoder/decoder compute (GPUs), with the LayerNorms, the linear attention, the maps and the score in float32; the graph\'s input and outputs stay float32' -r -f -a "fp32\t'float32 throughout'
fp16\t'float16 weights and compute, float32 I/O'"
complete -c dinomaly-export -l input -d 'What the input holds: float (normalised float32 crops, as dinomaly-score feeds its model) or uint8 (raw RGB crops, uint8 (B, 3, crop, crop); /255 and the ImageNet mean/std inside the graph). uint8 crops are exact for dinomaly and official checkpoints (Pillow resizes in uint8 too); anomalib resizes the float image, so crops resized in uint8 differ from its input by rounding' -r -f -a "float\t'Normalised float32 crops'
uint8\t'Raw uint8 RGB crops'"
complete -c dinomaly-export -l map-size -d 'Side of the anomaly map: N or HxW (official: 256), as for dinomaly-score. Refused with anomalib checkpoints, whose map is anomalib\'s raw map at the crop size and whose score is taken at 256' -r
complete -c dinomaly-export -l max-ratio -d 'Image score = mean of the top fraction of map pixels, in [0, 1] (0 = max; default 0.01), as for dinomaly-score' -r
complete -c dinomaly-export -s q -l quiet -d 'No progress bar and no notes on stderr (errors are still printed)'
complete -c dinomaly-export -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dinomaly-export -s V -l version -d 'Print version'
