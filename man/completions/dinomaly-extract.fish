complete -c dinomaly-extract -s i -l input -d 'Read samples from this file instead of stdin (\'-\' is stdin): JSON lines with an "image" field, or one image path per line' -r -F
complete -c dinomaly-extract -l dataset -d 'Read samples from a dataset tree instead of stdin' -r -F
complete -c dinomaly-extract -l layout -d 'Layout of --dataset' -r -f -a "mvtec\t'`<root>/<class>/{train,test}/<defect>/*`, masks in `ground_truth/<defect>/*_mask.png`'
visa\t'VisA: the 1cls split csv over the raw download, or the reorganised tree'
realiad\t'Real-IAD: `realiad_jsons` lists over `realiad_1024` images'
folder\t'`<root>/<class>/good/*` normal, `<root>/<class>/<defect>/*` anomalous'"
complete -c dinomaly-extract -l split -d 'Split of --dataset to read' -r -f -a "train\t'Normal training images'
test\t'Test images, normal and anomalous, with masks'"
complete -c dinomaly-extract -l classes -d 'Only these classes of --dataset (comma-separated; default all)' -r
complete -c dinomaly-extract -s o -l output -d 'Feature store to write; - writes it to stdout once all images are encoded (for a pipe into dinomaly-train -)' -r -F
complete -c dinomaly-extract -l backbone -d 'Backbone: dinov2_vit{s,b,l,g}14_reg4 (DINOv2 with registers), dinov2_vit{s,b,l,g}14 (plain), or any name when --weights is given (the architecture is read from the weights)' -r
complete -c dinomaly-extract -l weights -d 'Weights file or folder (Meta .pth, Hugging Face or timm safetensors). Default: the cache ($DINOMALY_CACHE, else the XDG cache), else a download from the official URL' -r -F
complete -c dinomaly-extract -l weights-sha256 -d 'Expected sha256 of the weights file; a different file is refused' -r
complete -c dinomaly-extract -l layers -d 'Target encoder blocks, 0-based, comma-separated (default per size: 2..9 for S/B, 4,6,...,18 for L)' -r
complete -c dinomaly-extract -l resize -d 'Resize before the centre crop: N or HxW' -r
complete -c dinomaly-extract -l crop -d 'Centre crop fed to the encoder: N or HxW (a multiple of the patch size)' -r
complete -c dinomaly-extract -l pos-interp -d 'How the positional embedding is fitted to the patch grid: official (DINOv2\'s scale factor with the 0.1 offset), exact (timm/anomalib), exact-antialias (timm default, Hugging Face)' -r -f -a "official\t'Official DINOv2: bicubic driven by the scale factor (grid + 0.1) / stored'
exact\t'Bicubic to the exact grid size, no antialias (timm dynamic size, anomalib)'
exact-antialias\t'Bicubic to the exact grid size with antialias (timm default, Hugging Face)'"
complete -c dinomaly-extract -l preprocess -d 'Image pre-processing: pil (the official code, Pillow-exact) or tensor (anomalib 2.7\'s float-tensor resize)' -r -f -a "pil\t'Pillow\'s antialiased bilinear on the 8-bit image (official code)'
tensor\t'libtorch antialiased bilinear on the float tensor (anomalib 2.7)'"
complete -c dinomaly-extract -l groups -d 'Layer groups stored per image: loose (the paper\'s two groups of four), single (one group of all layers)' -r -f -a "loose\t'Two groups of four layers'
single\t'One group of all layers'"
complete -c dinomaly-extract -l dtype -d 'Storage precision' -r -f -a "f16\t'Half precision: half the disk and memory, ~1e-3 relative rounding'
f32\t'Full precision, bit-exact encoder outputs'"
complete -c dinomaly-extract -l shard -d 'Encode only shard I of N (1-based): a contiguous block of the inputs (all input is read first), so that N machines (a Slurm array, GNU parallel) each write a part and `dinomaly-train PART1 ... PARTN` trains on their rows in input order. Rows equal a single run\'s bit for bit with --batch 1 (each image encoded alone); with larger batches the encoder\'s kernels may round the last bit differently by batch (README)' -r
complete -c dinomaly-extract -l batch -d 'Images per encoder batch' -r
complete -c dinomaly-extract -l on-error -d 'What to do with an image that cannot be read: stop (exit 2 at the first one, no feature store written) or skip (name it on stderr, leave it out of the store and go on)' -r -f -a "stop\t'Stop at the first one, with exit status 2'
skip\t'Report it and go on'"
complete -c dinomaly-extract -l device -d 'Where to compute: auto (CUDA when present, else CPU), cpu, cuda or cuda:N' -r
complete -c dinomaly-extract -l all-layers -d 'Store every target layer unfused (8 maps per image instead of 2), for training with --groups strict or single'
complete -c dinomaly-extract -s q -l quiet -d 'No progress bar and no notes on stderr (errors are still printed)'
complete -c dinomaly-extract -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dinomaly-extract -s V -l version -d 'Print version'
