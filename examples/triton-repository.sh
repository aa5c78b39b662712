#!/usr/bin/env bash
# A Triton Inference Server model repository entry for a trained checkpoint:
# one model served to many cameras by Triton's onnxruntime backend, the
# requests of all cameras batched together by Triton's dynamic batcher.
#
#   examples/triton-repository.sh CKPT REPO_DIR [NAME] [dinomaly-export flags...]
#
# runs dinomaly-export and writes
#
#   REPO_DIR/NAME/config.pbtxt     (platform "onnxruntime_onnx")
#   REPO_DIR/NAME/1/model.onnx
#
# NAME defaults to "dinomaly". Flags after NAME go to dinomaly-export
# (--weights for a dinomaly-train checkpoint, --precision fp16,
# --input uint8, --map-size, --batch N for a static batch, ...). The config
# is written from the JSON line dinomaly-export prints: tensor names, data
# types and dims. With a dynamic batch axis (the default), Triton's dims
# leave the batch dimension out and max_batch_size is set; the score, of
# shape [batch] in the model, is declared dims [ 1 ] with reshape [ ] (how
# Triton describes a per-request scalar of a batched model). With --batch N
# the model has a fixed shape: max_batch_size 0, full dims, no dynamic
# batching. The model's metadata (resize, crop, mean, std, map size, top
# ratio, calibration...) goes into the config's parameters as
# "metadata.KEY", so a client can read how to feed the model from
# Triton's model configuration endpoint.
#
# Then: tritonserver --model-repository REPO_DIR
#
# Environment:
#   DINOMALY_EXPORT=FILE     the dinomaly-export binary (default: on PATH,
#                            else target/release/dinomaly-export)
#   TRITON_MAX_BATCH=16      max_batch_size (requests merged into one run)
#   TRITON_QUEUE_DELAY_US=2000   how long the batcher waits to fill a batch
#   TRITON_INSTANCES=1       model instances per device
#   TRITON_INSTANCE_KIND=KIND_AUTO   KIND_GPU, KIND_CPU or KIND_AUTO
# Needs perl (its core JSON::PP module) to read the JSON line.
# Exit status: 0 written, 2 on errors (nothing left under REPO_DIR/NAME).
set -euo pipefail

die() { echo "triton-repository: $*" >&2; exit 2; }
[[ $# -ge 2 ]] || die "usage: $0 CKPT REPO_DIR [NAME] [dinomaly-export flags...]"
CKPT=$1 REPO=$2
shift 2
NAME=dinomaly
if [[ $# -gt 0 && $1 != -* ]]; then
  NAME=$1
  shift
fi
[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "model name '$NAME': use letters, digits, '_', '.' and '-' (a folder name)"
MAX_BATCH=${TRITON_MAX_BATCH:-16}
QUEUE_DELAY_US=${TRITON_QUEUE_DELAY_US:-2000}
INSTANCES=${TRITON_INSTANCES:-1}
KIND=${TRITON_INSTANCE_KIND:-KIND_AUTO}
[[ $MAX_BATCH =~ ^[1-9][0-9]*$ ]] || die "TRITON_MAX_BATCH=$MAX_BATCH: a whole number >= 1"
[[ $QUEUE_DELAY_US =~ ^[0-9]+$ ]] || die "TRITON_QUEUE_DELAY_US=$QUEUE_DELAY_US: a whole number of microseconds"
[[ $INSTANCES =~ ^[1-9][0-9]*$ ]] || die "TRITON_INSTANCES=$INSTANCES: a whole number >= 1"
[[ $KIND =~ ^KIND_(AUTO|GPU|CPU)$ ]] || die "TRITON_INSTANCE_KIND=$KIND: KIND_AUTO, KIND_GPU or KIND_CPU"
if [[ -n ${DINOMALY_EXPORT:-} ]]; then
  EXPORT=$DINOMALY_EXPORT
elif command -v dinomaly-export >/dev/null; then
  EXPORT=dinomaly-export
else
  EXPORT=$(dirname "$0")/../target/release/dinomaly-export
fi
command -v "$EXPORT" >/dev/null || die "no dinomaly-export ($EXPORT): build it (make build) or set DINOMALY_EXPORT"
command -v perl >/dev/null && perl -MJSON::PP -e 1 2>/dev/null || die "perl with its core JSON::PP module is needed to read dinomaly-export's JSON line"

mkdir -p "$REPO" || die "cannot create the repository folder $REPO"
MODEL_DIR=$REPO/$NAME
[[ ! -e $MODEL_DIR ]] || die "$MODEL_DIR exists: remove it or give another NAME"
# Everything goes into a temporary folder beside it, renamed when complete.
TMP=$(mktemp -d "$REPO/.$NAME.XXXXXX") || die "cannot write in $REPO"
trap 'rm -rf "$TMP"' EXIT
# mktemp's folder is private: give it the modes of a folder made under the
# umask, so that a server running as another user can read the model.
chmod "$(printf '%o' $((0777 & ~$(umask))))" "$TMP"
mkdir "$TMP/1"
"$EXPORT" -c "$CKPT" -o "$TMP/1/model.onnx" "$@" >"$TMP/export.json" || die "dinomaly-export failed (see above)"

perl -MJSON::PP -e '
  use strict;
  my ($json_file, $name, $max_batch, $delay, $count, $kind) = @ARGV;
  open(my $fh, "<", $json_file) or die "cannot read $json_file\n";
  my $line = <$fh>;
  my $info = JSON::PP->new->decode($line);
  my %types = (float32 => "TYPE_FP32", float16 => "TYPE_FP16", uint8 => "TYPE_UINT8", int64 => "TYPE_INT64");
  my $dynamic = $info->{inputs}[0]{shape}[0] == -1;
  sub quote { my $s = shift; $s =~ s/\\/\\\\/g; $s =~ s/"/\\"/g; $s =~ s/\n/\\n/g; return "\"$s\""; }
  sub tensor {
    my ($t, $dynamic) = @_;
    my $type = $types{$t->{dtype}} // die "no Triton type for dtype $t->{dtype}\n";
    my @dims = @{$t->{shape}};
    die "$t->{name}: a dynamic axis other than the batch\n" if grep { $_ < 0 } @dims[($dynamic ? 1 : 0) .. $#dims];
    shift @dims if $dynamic;
    my $reshape = "";
    # A per-item scalar of a batched model: Triton wants dims [ 1 ] and a
    # reshape to the empty shape (the model'"'"'s tensor is [batch]).
    if (!@dims) { @dims = (1); $reshape = "\n    reshape: { shape: [ ] }"; }
    return "  {\n    name: " . quote($t->{name}) . "\n    data_type: $type\n    dims: [ " . join(", ", @dims) . " ]$reshape\n  }";
  }
  print "# Written by examples/triton-repository.sh from dinomaly-export'"'"'s JSON line:\n";
  print "# 1/model.onnx sha256 $info->{sha256}, $info->{bytes} bytes, opset $info->{opset}, ",
    "precision $info->{precision}, input $info->{input_kind}\n";
  print "name: ", quote($name), "\nplatform: \"onnxruntime_onnx\"\n";
  print "max_batch_size: ", ($dynamic ? $max_batch : 0), "\n";
  print "input [\n", join(",\n", map { tensor($_, $dynamic) } @{$info->{inputs}}), "\n]\n";
  print "output [\n", join(",\n", map { tensor($_, $dynamic) } @{$info->{outputs}}), "\n]\n";
  print "dynamic_batching {\n  max_queue_delay_microseconds: $delay\n}\n" if $dynamic;
  print "instance_group [\n  {\n    count: $count\n    kind: $kind\n  }\n]\n";
  my $meta = $info->{metadata} // {};
  for my $key (sort keys %$meta) {
    my $v = $meta->{$key};
    $v = JSON::PP->new->canonical->encode($v) if ref $v;
    print "parameters: {\n  key: ", quote("metadata.$key"), "\n  value: { string_value: ", quote($v), " }\n}\n";
  }
' "$TMP/export.json" "$NAME" "$MAX_BATCH" "$QUEUE_DELAY_US" "$INSTANCES" "$KIND" >"$TMP/config.pbtxt" ||
  die "cannot write config.pbtxt from dinomaly-export's JSON line"
rm "$TMP/export.json"
mv "$TMP" "$MODEL_DIR" || die "cannot rename $TMP to $MODEL_DIR"
trap - EXIT
echo "triton-repository: $MODEL_DIR (config.pbtxt, 1/model.onnx); serve it with: tritonserver --model-repository $REPO" >&2
echo "$MODEL_DIR"
