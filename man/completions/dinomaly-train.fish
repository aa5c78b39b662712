complete -c dinomaly-train -s i -l input -d 'Read samples from this file instead of stdin (\'-\' is stdin): JSON lines with an "image" field, or one image path per line' -r -F
complete -c dinomaly-train -l dataset -d 'Read samples from a dataset tree instead of stdin' -r -F
complete -c dinomaly-train -l layout -d 'Layout of --dataset' -r -f -a "mvtec\t'`<root>/<class>/{train,test}/<defect>/*`, masks in `ground_truth/<defect>/*_mask.png`'
visa\t'VisA: the 1cls split csv over the raw download, or the reorganised tree'
realiad\t'Real-IAD: `realiad_jsons` lists over `realiad_1024` images'
folder\t'`<root>/<class>/good/*` normal, `<root>/<class>/<defect>/*` anomalous'"
complete -c dinomaly-train -l split -d 'Split of --dataset to read' -r -f -a "train\t'Normal training images'
test\t'Test images, normal and anomalous, with masks'"
complete -c dinomaly-train -l backbone -d 'Backbone: dinov2_vit{s,b,l,g}14_reg4 (DINOv2 with registers), dinov2_vit{s,b,l,g}14 (plain), or any name when --weights is given (the architecture is read from the weights)' -r
complete -c dinomaly-train -l weights -d 'Weights file or folder (Meta .pth, Hugging Face or timm safetensors). Default: the cache ($DINOMALY_CACHE, else the XDG cache), else a download from the official URL' -r -F
complete -c dinomaly-train -l weights-sha256 -d 'Expected sha256 of the weights file; a different file is refused' -r
complete -c dinomaly-train -l layers -d 'Target encoder blocks, 0-based, comma-separated (default per size: 2..9 for S/B, 4,6,...,18 for L)' -r
complete -c dinomaly-train -l resize -d 'Resize before the centre crop: N or HxW' -r
complete -c dinomaly-train -l crop -d 'Centre crop fed to the encoder: N or HxW (a multiple of the patch size)' -r
complete -c dinomaly-train -l pos-interp -d 'How the positional embedding is fitted to the patch grid: official (DINOv2\'s scale factor with the 0.1 offset), exact (timm/anomalib), exact-antialias (timm default, Hugging Face)' -r -f -a "official\t'Official DINOv2: bicubic driven by the scale factor (grid + 0.1) / stored'
exact\t'Bicubic to the exact grid size, no antialias (timm dynamic size, anomalib)'
exact-antialias\t'Bicubic to the exact grid size with antialias (timm default, Hugging Face)'"
complete -c dinomaly-train -l preprocess -d 'Image pre-processing: pil (the official code, Pillow-exact) or tensor (anomalib 2.7\'s float-tensor resize)' -r -f -a "pil\t'Pillow\'s antialiased bilinear on the 8-bit image (official code)'
tensor\t'libtorch antialiased bilinear on the float tensor (anomalib 2.7)'"
complete -c dinomaly-train -l on-error -d 'With --images: what to do with an image that cannot be read (all are decoded once before training): stop (exit 2, no checkpoint written) or skip (name it on stderr and train without it, as dinomaly-extract --on-error skip leaves it out of a store)' -r -f -a "stop\t'Stop at the first one, with exit status 2'
skip\t'Report it and go on'"
complete -c dinomaly-train -s o -l output -d 'Checkpoint to write; with --mode separated, a folder that receives CLASS.safetensors per class' -r -F
complete -c dinomaly-train -l mode -d 'unified: one model for all classes (labels unused); separated: one model per class' -r -f -a "unified\t'One model for all classes'
separated\t'One model per class'"
complete -c dinomaly-train -l preset -d 'The paper\'s per-setting defaults: mvtec and visa (unified, 10,000 iterations, dropout 0.2, eps 1e-10), realiad (unified, 50,000, dropout 0.4), separated (per class, 5,000, eps 1e-8), large (as mvtec; extract with --backbone dinov2_vitl14_reg4)' -r -f -a "mvtec\t'MVTec-AD multi-class'
visa\t'VisA multi-class'
realiad\t'Real-IAD multi-class'
separated\t'Class-separated training'
large\t'ViT-L (as mvtec)'"
complete -c dinomaly-train -l iterations -d 'Training iterations (per class when separated)' -r
complete -c dinomaly-train -l batch -d 'Images per batch; incomplete batches at the end of an epoch are dropped, as the official loader does' -r
complete -c dinomaly-train -l sampling -d 'How batches are drawn' -r -f -a "shuffle\t'Shuffle all rows together every epoch; drop the last partial batch'
class-balanced\t'Draw classes evenly within every batch'"
complete -c dinomaly-train -l lr -d 'Peak learning rate (after warm-up)' -r
complete -c dinomaly-train -l final-lr -d 'Learning rate at the end of the cosine decay' -r
complete -c dinomaly-train -l warmup -d 'Linear warm-up iterations, starting from 0 (at most --iterations are used)' -r
complete -c dinomaly-train -l weight-decay -d 'Decoupled weight decay (all tensors)' -r
complete -c dinomaly-train -l eps -d 'StableAdamW epsilon (default from the preset: 1e-10 unified, 1e-8 separated)' -r
complete -c dinomaly-train -l clip -d 'Global gradient-norm clip' -r
complete -c dinomaly-train -l dropout -d 'Bottleneck dropout, in [0, 1) (default from the preset)' -r
complete -c dinomaly-train -l attention -d 'Decoder attention: linear (ELU+1, the paper\'s) or softmax (ablation)' -r -f -a "linear\t'ELU+1 linear attention'
softmax\t'Softmax attention'"
complete -c dinomaly-train -l attention-eps -d 'Add this epsilon to the linear-attention normaliser (the official README\'s fix when a dataset gives NaN losses); default none. Linear attention only' -r
complete -c dinomaly-train -l groups -d 'Layer groups: loose (two groups of four, the paper\'s), strict (layer to layer) or single (all eight together)' -r -f -a "loose\t'Two groups, first and second half: [[0,1,2,3],[4,5,6,7]] (the loose constraint)'
strict\t'One group per layer: eight singleton groups (layer to layer)'
single\t'All layers in one group'"
complete -c dinomaly-train -l loss -d 'Loss: hard-mining (the loose loss) or plain global cosine' -r -f -a "hard-mining\t'Global cosine with hard-mining gradient weighting'
plain\t'Global cosine'"
complete -c dinomaly-train -l precision -d 'Compute precision: fp32 (the references\') or bf16 mixed precision (matrix products in bfloat16; weights, optimizer state, norms, softmax and the loss in float32). Faster where bfloat16 matrix products are (CUDA, CPUs with AVX512-BF16/AMX). --val still scores in fp32, as dinomaly-score does by default' -r -f -a "fp32\t'float32 everywhere (the references\' setting)'
bf16\t'Encoder and decoder in bfloat16 (for CUDA; maps and scores are still computed in float32 from the bfloat16 features)'"
complete -c dinomaly-train -l variant -d 'Model variant: official (MLP biases) or anomalib (no MLP biases, so its checkpoints fit)' -r -f -a "official\t'MLP biases on'
anomalib\t'MLP biases off'"
complete -c dinomaly-train -l seed -d 'Seed for initialisation, batches and dropout' -r
complete -c dinomaly-train -l spike-factor -d 'Skip a step whose loss exceeds this multiple of the median of the last 100 losses (0 turns it off; otherwise above 1). Non-finite losses and gradients are always skipped. The official loop skips no step: 0 trains as it does' -r
complete -c dinomaly-train -l save-every -d 'Write the checkpoint (and its optimizer state, PATH.state) every N iterations, so a killed run can --resume. With --keep-best these saves go to NAME.last.EXT beside the output (model.last.safetensors for -o model.safetensors), which keeps the best weights' -r
complete -c dinomaly-train -l resume -d 'Continue from a checkpoint written with --save-every (with --keep-best: NAME.last.EXT). The flags that shape the training (--iterations, --batch, --lr, --warmup, --seed, --classes, ...) must be those of the run being resumed: a difference is refused, naming the flag. --precision and --grad-checkpointing may change; the checkpoint records from which iteration' -r -F
complete -c dinomaly-train -l init -d 'Start from the bottleneck and decoder of this trained checkpoint (dinomaly-train\'s, the official repository\'s or anomalib\'s) instead of the random initialisation, with a fresh optimizer and schedule: fine-tuning. Its encoder must be the store\'s: a dinomaly checkpoint\'s record is compared; an official or anomalib checkpoint\'s encoder tensors are compared with the weights the store was made with (found by the store\'s backbone name in the cache, or given with --weights), and the store must have been extracted with its reference\'s pre-processing. Its model (MLP biases, decoder depth, groups, attention) must be the one the flags build (--variant, --groups)' -r -F
complete -c dinomaly-train -l val -d 'Validate against this labelled feature store (a test or held-out split extracted with the same settings): image AUROC per class and mean, pixel AUROC when masks are there, over the classes a model is trained on (with --mode separated, each model on its own class). Logged on stderr and in --log' -r -F
complete -c dinomaly-train -l val-every -d 'Validate every N iterations (default: once, at the end)' -r
complete -c dinomaly-train -l keep-best -d 'Keep the checkpoint with the best validation value of this metric instead of the last one (needs --val-every below --iterations: more than one validation). Refused when a validated class cannot define it (I-AUROC of a class with only normal or only anomalous images, P-AUROC without masks), as the mean would be undefined' -r -f -a "i-auroc\t'Mean image AUROC over classes'
p-auroc\t'Mean pixel AUROC over classes (needs masks)'"
complete -c dinomaly-train -l patience -d 'Stop when this many validations in a row did not improve the --keep-best metric' -r
complete -c dinomaly-train -l classes -d 'Only these classes (comma-separated; of the store, the samples or the --dataset tree)' -r
complete -c dinomaly-train -l log -d 'Write one JSON line per iteration (it, loss, lr, p, grad_norm, skipped, elapsed_s: seconds since this run\'s first iteration began, from a monotonic clock) and per validation (validation: iterations done, i_auroc, p_auroc, classes) to this file as training goes (a FIFO works). A resumed run continues the log of the run it resumes. When the log cannot be written (its reader went away, disk full), training goes on, the checkpoint is written, and the run ends with exit 2 naming the log' -r -F
complete -c dinomaly-train -l device -d 'Where to compute: auto (CUDA when present, else CPU), cpu, cuda or cuda:N' -r
complete -c dinomaly-train -l images -d 'Train from images instead of a feature store: samples from stdin, --input or --dataset, encoded every iteration by the encoder that the encoder flags name'
complete -c dinomaly-train -l grad-checkpointing -d 'Recompute the decoder blocks during backward instead of keeping their activations: less memory for large backbones (ViT-B, batch 8: peak 3.7 instead of 6.8 GB), one more decoder forward per step, the same gradients up to float summation order'
complete -c dinomaly-train -s q -l quiet -d 'No progress bar and no notes on stderr (errors are still printed)'
complete -c dinomaly-train -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dinomaly-train -s V -l version -d 'Print version'
