#!/bin/sh
# Bake pretrained weights into an image: fetch-weights.sh none|seed13|all
# Files go to $KERAS_HOME/models under Keras's names; `zoo weights fetch` checks every
# download against Keras's published md5/sha256 and fails the build on a mismatch.
set -eu
SEED13="Xception VGG16 VGG19 ResNet50 InceptionV3 InceptionResNetV2 MobileNet MobileNetV2 \
DenseNet121 DenseNet169 DenseNet201 NASNetMobile NASNetLarge"
mkdir -p "$KERAS_HOME/models"
case "${1:-none}" in
  none) ;;
  # shellcheck disable=SC2086 # word splitting of the model list is intended
  seed13) zoo weights fetch $SEED13 ;;
  all) zoo weights fetch '*' ;;
  *) echo "WEIGHTS must be none, seed13 or all; received '$1'" >&2; exit 2 ;;
esac
