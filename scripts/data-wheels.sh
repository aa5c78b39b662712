# shellcheck shell=bash
# The registry wheels the real images come from, pinned in one place and
# fetched into a wheel cache with `pip download` (nothing is installed).
# Sourced by examples/demo.sh, scripts/onnx-check.sh and scripts/gpu-bundle.sh;
# they read the images out of the wheels with `demo-data elpv|textures`.
#
#   fetch_elpv_wheel DIR      sets ELPV_WHEEL (ELPV solar cells, CC BY-NC-SA 4.0:
#                             fetched by name, never committed)
#   fetch_skimage_wheel DIR   sets SKIMAGE_WHEEL (scikit-image's CC0 textures)
#
# Each returns 1 with a message on stderr when pip cannot fetch the wheel.
# Uses $PYTHON (default python3).

ELPV_WHEEL_PIN=elpv-dataset==1.0.0.post1
SKIMAGE_PIN=scikit-image==0.26.0

_pip_download() {
  local dir=$1
  shift
  mkdir -p "$dir"
  "${PYTHON:-python3}" -m pip download --no-deps --disable-pip-version-check -q -d "$dir" "$@"
}

fetch_elpv_wheel() {
  ELPV_WHEEL=$1/elpv_dataset-${ELPV_WHEEL_PIN#*==}-py3-none-any.whl
  [[ -f $ELPV_WHEEL ]] && return 0
  _pip_download "$1" "$ELPV_WHEEL_PIN" && [[ -f $ELPV_WHEEL ]] ||
    { echo "cannot download $ELPV_WHEEL_PIN with pip into $1" >&2; return 1; }
}

fetch_skimage_wheel() {
  local version=${SKIMAGE_PIN#*==}
  SKIMAGE_WHEEL=$(compgen -G "$1/scikit_image-$version-*.whl" | head -n 1 || true)
  [[ -n $SKIMAGE_WHEEL ]] && return 0
  # Any platform's wheel carries the same data files; when this Python has
  # none, take the manylinux CPython 3.12 one.
  _pip_download "$1" --only-binary=:all: "$SKIMAGE_PIN" ||
    _pip_download "$1" --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --python-version 3.12 --implementation cp --abi cp312 "$SKIMAGE_PIN" ||
    { echo "cannot download a $SKIMAGE_PIN wheel with pip into $1" >&2; return 1; }
  SKIMAGE_WHEEL=$(compgen -G "$1/scikit_image-$version-*.whl" | head -n 1 || true)
  [[ -n $SKIMAGE_WHEEL ]] || { echo "no scikit-image $version wheel in $1 after pip download" >&2; return 1; }
}
