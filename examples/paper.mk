# Reproduce the paper's tables with the four tools: the unified (multi-class) rows for
# MVTec-AD, VisA and Real-IAD, the class-separated setting, several seeds, and the
# ablation study. Run from anywhere:
#
#   make -f examples/paper.mk mvtec DATA=/data/mvtec_anomaly_detection WEIGHTS=/w/dinov2_vitb14_reg4_pretrain.pth
#   make -C examples visa DATA=/data/visa SEEDS="1 2 3"        # examples/Makefile includes this file
#   make -f examples/paper.mk mvtec-separated DATA=...
#   make -f examples/paper.mk ablation DATA=... WEIGHTS_S=... WEIGHTS_L=...
#   make -f examples/paper.mk help
#
# Every step is a file target, so an interrupted or extended run (more seeds, another
# ablation) redoes only what is missing. The encoder runs once per backbone and resolution:
# the train split goes into one feature store, the test split into one store per class;
# every model of that backbone and resolution (all seeds, unified and separated, the
# attention/loss/dropout ablations) trains and scores from these stores.
#
# Layout of $(OUT) (default ./runs; DS is mvtec, visa or realiad, with the classes
# appended when CLASSES selects a subset, e.g. mvtec-bottle-cable):
#   DS/features/B-r448-c392-train.safetensors          train split, fused layer groups (B: ViT-B)
#   DS/features/B-r448-c392-test/CLASS.safetensors      test split, per class
#   DS/features/B-r448-c392-all-...                     every layer unfused (--all-layers)
#   DS/unified/VARIANT/seedN/{model.safetensors,train.jsonl,scores/,maps/,scores.jsonl,metrics.csv,metrics.md}
#   DS/separated/VARIANT/seedN/{models/CLASS.safetensors,logs/,scores/,maps/,...}
#   DS/SETTING/VARIANT/summary.md                       mean ± std over $(SEEDS)
#   DS/ablation.md                                      one row per ablation variant
# VARIANT names the encoder (S, B, L or G for dinov2_vit{s,b,l,g}14_reg4, whichever of
# BACKBONE_S/B/L names it; any other backbone by its name), resize, crop, and the training
# flags that differ from the preset, e.g. B-r448-c392_attention-softmax. Changing TRAIN_FLAGS does not
# rename anything: use another OUT for runs that differ only there.
# Paths must not contain spaces (make's rule).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
# Feature stores and models are expensive: never delete them as intermediates.
.SECONDARY:
.DEFAULT_GOAL := help

HERE := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

# ---- settings (override on the command line) ---------------------------------------
# The tools: this checkout's build when there is one, else the PATH.
BIN      ?= $(wildcard $(abspath $(HERE)/../target/release))
OUT      ?= runs
DATA     ?=
DATA_mvtec   ?= $(DATA)
DATA_visa    ?= $(DATA)
DATA_realiad ?= $(DATA)
SEEDS    ?= 1
DEVICE   ?= auto
# Encoders by size. WEIGHTS is the ViT-B file of the main tables; empty means the
# tools' cache or the official download.
BACKBONE_S ?= dinov2_vits14_reg4
BACKBONE_B ?= dinov2_vitb14_reg4
BACKBONE_L ?= dinov2_vitl14_reg4
WEIGHTS    ?=
WEIGHTS_S  ?=
WEIGHTS_B  ?= $(WEIGHTS)
WEIGHTS_L  ?=
# The paper's input: resize 448, centre crop 392 (R448-C392).
RESIZE ?= 448
CROP   ?= 392
# Extra flags per tool, e.g. EXTRACT_FLAGS="--batch 32" TRAIN_FLAGS="--iterations 200"
# SCORE_FLAGS=--overlay METRICS_FLAGS="--target-fpr 0.01".
EXTRACT_FLAGS ?=
TRAIN_FLAGS   ?=
SCORE_FLAGS   ?=
METRICS_FLAGS ?=
# Dataset of the ablation study, and its input sizes (crop; resize = crop * 8 / 7 as in
# R448-C392: 224 -> 256, 448 -> 512, 518 -> 592; 518 is DINOv2's own 37x37 grid).
ABLATE    ?= mvtec
ABL_CROPS ?= 224 392 448 518
# Classes, in the official order; CLASSES=... restricts any dataset to a subset.
CLASSES ?=
CLASSES_mvtec ?= carpet grid leather tile wood bottle cable capsule hazelnut metal_nut \
                 pill screw toothbrush transistor zipper
CLASSES_visa ?= candle capsules cashew chewinggum fryum macaroni1 macaroni2 pcb1 pcb2 pcb3 \
                pcb4 pipe_fryum
CLASSES_realiad ?= audiojack bottle_cap button_battery end_cap eraser fire_hood mint mounts \
                   pcb phone_battery plastic_nut plastic_plug porcelain_doll regulator \
                   rolled_strip_base sim_card_set switch tape terminalblock toothbrush toy \
                   toy_brick transistor1 usb usb_adaptor u_block vcpill wooden_beads woodstick \
                   zipper

EXTRACT   := $(if $(BIN),$(BIN)/)dinomaly-extract
TRAIN     := $(if $(BIN),$(BIN)/)dinomaly-train
SCORE     := $(if $(BIN),$(BIN)/)dinomaly-score
METRICS   := $(if $(BIN),$(BIN)/)dinomaly-metrics
SUMMARIZE := sh $(HERE)/summarize.sh

DATASETS := mvtec visa realiad
# dinomaly-extract --layout and dinomaly-train --preset per data set.
LAYOUT_mvtec   := mvtec
LAYOUT_visa    := visa
LAYOUT_realiad := realiad
PRESET_mvtec   := mvtec
PRESET_visa    := visa
PRESET_realiad := realiad
NAME_mvtec     := MVTec-AD
NAME_visa      := VisA
NAME_realiad   := Real-IAD

# ---- helpers ----------------------------------------------------------------------
empty :=
space := $(empty) $(empty)
comma := ,
commas  = $(subst $(space),$(comma),$(strip $1))
classes = $(strip $(or $(CLASSES),$(CLASSES_$1)))
# Output folder of a data set; a class subset gets its own (its train store differs).
root    = $(OUT)/$1$(if $(strip $(CLASSES)),-$(subst $(space),-,$(strip $(CLASSES))))
encoder = --backbone $(BACKBONE_$1)$(if $(WEIGHTS_$1), --weights $(WEIGHTS_$1))
# The encoder of a size slot (S, B, L) in file names and tables: named after the backbone
# it really is, so BACKBONE_B=dinov2_vits14_reg4 gives S-... and "ViT-S/14-reg4".
BB_TAG_dinov2_vits14_reg4 := S
BB_TAG_dinov2_vitb14_reg4 := B
BB_TAG_dinov2_vitl14_reg4 := L
BB_TAG_dinov2_vitg14_reg4 := G
bb_tag   = $(or $(BB_TAG_$(BACKBONE_$1)),$(BACKBONE_$1))
bb_label = $(if $(BB_TAG_$(BACKBONE_$1)),ViT-$(BB_TAG_$(BACKBONE_$1))/14-reg4,$(BACKBONE_$1))
device  = --device $(DEVICE)

# ---- model variants ---------------------------------------------------------------
# A variant is a backbone size slot (VB_), resize (VR_), crop (VC_), whether the store keeps
# every layer (VA_) and training flags (VF_) on top of the data set's preset. `paper`
# is the paper's setting. The ablation changes one thing at a time.
v_bb     = $(or $(VB_$1),B)
v_resize = $(or $(VR_$1),$(RESIZE))
v_crop   = $(or $(VC_$1),$(CROP))
v_all    = $(VA_$1)
v_flags  = $(strip $(VF_$1))
# Store of a variant: $(OUT)/DS/features/B-r448-c392[-all]
v_feat   = $(call root,$1)/features/$(call bb_tag,$(call v_bb,$2))-r$(call v_resize,$2)-c$(call v_crop,$2)$(if $(call v_all,$2),-all)
# Folder of a variant: the store's name plus its training flags, so two variants with the
# same settings (attention-linear and paper) share one model.
v_dir    = $(notdir $(call v_feat,$1,$2))$(if $(call v_flags,$2),_$(subst $(space),-,$(strip $(subst --,,$(call v_flags,$2)))))

ABL_GROUPS := attention groups loss dropout resolution backbone
ABL_attention  := attention-linear attention-softmax
ABL_groups     := groups-loose groups-strict groups-single
ABL_loss       := loss-hard-mining loss-plain
ABL_dropout    := dropout-0 dropout-0.2
ABL_resolution := $(foreach c,$(ABL_CROPS),res-$c)
ABL_backbone   := backbone-S backbone-B backbone-L
ABL_VARIANTS   := $(foreach g,$(ABL_GROUPS),$(ABL_$g))

VF_attention-softmax := --attention softmax
# Layer-to-layer and single-group reconstruction need every layer in the store.
VA_groups-strict := 1
VF_groups-strict := --groups strict
VA_groups-single := 1
VF_groups-single := --groups single
VF_loss-plain    := --loss plain
VF_dropout-0     := --dropout 0
# 0.2 is the preset for MVTec-AD and VisA; Real-IAD's preset is 0.4.
VF_dropout-0.2   := $(if $(filter realiad,$(ABLATE)),--dropout 0.2)
$(foreach c,$(ABL_CROPS),$(eval VC_res-$c := $c)$(eval VR_res-$c := $(shell expr $c \* 8 / 7)))
VB_backbone-S := S
VB_backbone-L := L

LABEL_attention-linear  := attention: linear (ELU+1)
LABEL_attention-softmax := attention: softmax
LABEL_groups-loose      := groups: loose (2 groups of 4)
LABEL_groups-strict     := groups: strict (layer to layer)
LABEL_groups-single     := groups: single (all 8)
LABEL_loss-hard-mining  := loss: hard mining
LABEL_loss-plain        := loss: plain global cosine
LABEL_dropout-0         := bottleneck dropout 0
LABEL_dropout-0.2       := bottleneck dropout 0.2
$(foreach c,$(ABL_CROPS),$(eval LABEL_res-$c := input R$(VR_res-$c)-C$c))
LABEL_backbone-S := backbone $(call bb_label,S)
LABEL_backbone-B := backbone $(call bb_label,B)
LABEL_backbone-L := backbone $(call bb_label,L)

# ---- rule templates ---------------------------------------------------------------
# Feature stores: $1 data set, $2 size S/B/L, $3 resize, $4 crop, $5 all layers, $6 prefix.
define FEATURE_RULES
$6-train.safetensors:
	@test -n "$$(DATA_$1)" || { echo "set DATA=path/to/$(NAME_$1) (or DATA_$1=...)" >&2; exit 2; }
	@mkdir -p $$(@D)
	$$(EXTRACT) --dataset $$(DATA_$1) --layout $(LAYOUT_$1) --split train --classes $(call commas,$(call classes,$1)) $$(call encoder,$2) --resize $3 --crop $4$(if $5, --all-layers) $$(device) $$(EXTRACT_FLAGS) -o $$@
$6-test/%.safetensors:
	@test -n "$$(DATA_$1)" || { echo "set DATA=path/to/$(NAME_$1) (or DATA_$1=...)" >&2; exit 2; }
	@mkdir -p $$(@D)
	$$(EXTRACT) --dataset $$(DATA_$1) --layout $(LAYOUT_$1) --split test --classes $$* $$(call encoder,$2) --resize $3 --crop $4$(if $5, --all-layers) $$(device) $$(EXTRACT_FLAGS) -o $$@
endef

# The model(s) of one run (arguments as RUN_RULES).
define UNIFIED_MODEL
$5/model.safetensors: $6-train.safetensors
	@mkdir -p $$(@D)
	$$(TRAIN) $$< -o $$@ --preset $(PRESET_$1) --seed $4 $(call v_flags,$3) --log $5/train.jsonl $$(device) $$(TRAIN_FLAGS)
endef
define SEPARATED_MODELS
$5/models/%.safetensors: $6-train.safetensors
	@mkdir -p $5/models $5/logs
	$$(TRAIN) $$< -o $5/models --preset separated --classes $$* --seed $4 $(call v_flags,$3) --log $5/logs/$$*.jsonl $$(device) $$(TRAIN_FLAGS)
endef

# One seed of one variant: $1 data set, $2 unified|separated, $3 variant, $4 seed,
# $5 run folder, $6 store prefix.
define RUN_RULES
$(if $(filter unified,$2),$(UNIFIED_MODEL),$(SEPARATED_MODELS))
$5/scores/%.jsonl: $(if $(filter unified,$2),$5/model.safetensors,$5/models/%.safetensors) $6-test/%.safetensors
	@mkdir -p $$(@D) $5/maps
	$$(SCORE) -c $$< --features $$(word 2,$$^) --maps-dir $5/maps $$(device) $$(SCORE_FLAGS) > $$@.part
	mv $$@.part $$@
$5/scores.jsonl: $(foreach c,$(call classes,$1),$5/scores/$c.jsonl)
	cat $$^ > $$@.part
	mv $$@.part $$@
$5/metrics.csv: $5/scores.jsonl
	$$(METRICS) -i $$< --format csv --resize $(call v_resize,$3) --crop $(call v_crop,$3) $$(METRICS_FLAGS) > $$@.part
	mv $$@.part $$@
$5/metrics.md: $5/scores.jsonl
	$$(METRICS) -i $$< --format markdown --resize $(call v_resize,$3) --crop $(call v_crop,$3) $$(METRICS_FLAGS) > $$@.part
	mv $$@.part $$@
endef

# All seeds of a variant and their summary: $1 data set, $2 setting, $3 variant, $4 folder.
define VARIANT_RULES
$4/summary.md: FORCE $(foreach s,$(SEEDS),$4/seed$s/metrics.csv $4/seed$s/metrics.md)
	$$(SUMMARIZE) table $$(filter %.csv,$$^) > $$@.part
	mv $$@.part $$@
endef

# Defines the rules a (data set, setting, variant) needs, each rule once.
define use_variant
$(eval _feat := $(call v_feat,$1,$3))
$(if $(seen.$(_feat)),,$(eval seen.$(_feat) := 1)$(eval $(call FEATURE_RULES,$1,$(call v_bb,$3),$(call v_resize,$3),$(call v_crop,$3),$(call v_all,$3),$(_feat))))
$(eval _dir := $(call root,$1)/$2/$(call v_dir,$1,$3))
$(foreach s,$(SEEDS),$(if $(seen.$(_dir)/seed$s),,$(eval seen.$(_dir)/seed$s := 1)$(eval $(call RUN_RULES,$1,$2,$3,$s,$(_dir)/seed$s,$(_feat)))))
$(if $(seen.$(_dir)),,$(eval seen.$(_dir) := 1)$(eval $(call VARIANT_RULES,$1,$2,$3,$(_dir))))
endef
summary_of = $(call root,$1)/$2/$(call v_dir,$1,$3)/summary.md

# ---- targets ----------------------------------------------------------------------
.PHONY: help FORCE ablation ablation-table \
        $(DATASETS) $(DATASETS:%=%-separated) $(DATASETS:%=%-features) \
        $(ABL_GROUPS:%=ablation-%) $(ABL_VARIANTS:%=ablation-%)
FORCE:

# $1 data set: `DS` (unified, the paper's main table), `DS-separated`, `DS-features`.
define DATASET_TARGETS
$(call use_variant,$1,unified,paper)
$(call use_variant,$1,separated,paper)
$1: $(call summary_of,$1,unified,paper)
	@echo; echo "$(NAME_$1), unified, seeds $(SEEDS) ($$<):"; cat $$<
$1-separated: $(call summary_of,$1,separated,paper)
	@echo; echo "$(NAME_$1), class-separated, seeds $(SEEDS) ($$<):"; cat $$<
$1-features: $(call v_feat,$1,paper)-train.safetensors $(foreach c,$(call classes,$1),$(call v_feat,$1,paper)-test/$c.safetensors)
endef
$(foreach d,$(DATASETS),$(eval $(call DATASET_TARGETS,$d)))

# Ablation on $(ABLATE): one target per variant, per group, and the whole table.
$(foreach v,$(ABL_VARIANTS),$(call use_variant,$(ABLATE),unified,$v))
define ABLATION_VARIANT
ablation-$1: $(call summary_of,$(ABLATE),unified,$1)
	@echo; echo "$(NAME_$(ABLATE)) ablation, $(LABEL_$1), seeds $(SEEDS) ($$<):"; cat $$<
endef
$(foreach v,$(ABL_VARIANTS),$(eval $(call ABLATION_VARIANT,$v)))
$(foreach g,$(ABL_GROUPS),$(eval ablation-$g: $(ABL_$g:%=ablation-%)))

ABL_ROOT  := $(call root,$(ABLATE))
ABL_TABLE := $(ABL_ROOT)/ablation.md
ablation: $(ABL_TABLE)
	@echo; echo "$(NAME_$(ABLATE)) ablation, seeds $(SEEDS) ($<):"; cat $<
ablation-table: ablation
$(ABL_TABLE): FORCE $(foreach v,$(ABL_VARIANTS),$(foreach s,$(SEEDS),$(ABL_ROOT)/unified/$(call v_dir,$(ABLATE),$v)/seed$s/metrics.csv))
	{ $(SUMMARIZE) header; \
	  $(foreach v,$(ABL_VARIANTS),$(SUMMARIZE) row '$(LABEL_$v)' $(foreach s,$(SEEDS),$(ABL_ROOT)/unified/$(call v_dir,$(ABLATE),$v)/seed$s/metrics.csv);) \
	} > $@.part
	mv $@.part $@

help:
	@echo 'Reproduce the Dinomaly paper with the dinomaly tools ($(or $(BIN),from the PATH)).'
	@echo
	@echo '  make -f examples/paper.mk mvtec DATA=/data/mvtec WEIGHTS=dinov2_vitb14_reg4_pretrain.pth'
	@echo
	@echo 'Targets (DS = mvtec | visa | realiad):'
	@echo '  DS              unified (multi-class) model, the paper main table row; mean ± std over SEEDS'
	@echo '  DS-separated    one model per class (--preset separated), one metrics table'
	@echo '  DS-features     only the feature stores of the paper setting'
	@echo '  ablation        every ablation variant on ABLATE=$(ABLATE), then one table'
	@echo '  ablation-GROUP  one group: $(ABL_GROUPS)'
	@echo '  ablation-VARIANT one variant: $(ABL_VARIANTS)'
	@echo
	@echo 'Variables: DATA (or DATA_DS), WEIGHTS (ViT-B) WEIGHTS_S WEIGHTS_L, SEEDS="1 2 3",'
	@echo '  OUT=$(OUT), DEVICE=$(DEVICE), CLASSES="bottle cable", RESIZE=$(RESIZE) CROP=$(CROP),'
	@echo '  ABL_CROPS="$(ABL_CROPS)", EXTRACT_FLAGS TRAIN_FLAGS SCORE_FLAGS METRICS_FLAGS.'
	@echo 'Dry run: make -n -f examples/paper.mk mvtec DATA=/data/mvtec'
