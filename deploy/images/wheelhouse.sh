#!/bin/sh
# The wheels an image build installs from, for builds without a package index (air-gapped
# sites; CI): wheelhouse.sh cpu|gpu [DIR]. Run where pip reaches an index (pip's own settings:
# index URL, certificates, proxy), then carry DIR over with the source tree.
# Wheels go to DIR/<flavour> (default ./wheelhouse), through a cache under $ZOO_CACHE keyed by
# pyproject.toml and constraints.txt, so an unchanged pin set is copied (hard links), not
# fetched again.
set -eu
flavour=$1 dest=${2:-wheelhouse}
case "$flavour" in
  cpu) extras="serve,server" ;;
  gpu) extras="serve-gpu,gpu" ;;
  *) echo "wheelhouse.sh: the flavour must be cpu or gpu; received '$flavour'" >&2; exit 2 ;;
esac
python=${PYTHON:-python3}
key=$(cat pyproject.toml constraints.txt deploy/images/wheelhouse.sh | sha256sum | cut -c1-16)
cache=${ZOO_CACHE:-/var/cache/keras-zoo}/wheelhouse/$flavour-$key
if [ ! -e "$cache/.complete" ]; then
  rm -rf "$cache" && mkdir -p "$cache"
  # setuptools and wheel: pip builds keras-zoo itself from the source in the image.
  "$python" -m pip wheel --quiet --wheel-dir "$cache" -c constraints.txt \
    ".[$extras]" "setuptools>=69" wheel
  rm -f "$cache"/keras_zoo-*.whl
  touch "$cache/.complete"
fi
mkdir -p "$dest/$flavour"
find "$dest/$flavour" -name '*.whl' -delete
cp -l "$cache"/*.whl "$dest/$flavour/" 2>/dev/null || cp "$cache"/*.whl "$dest/$flavour/"
echo "$dest/$flavour: $(find "$dest/$flavour" -name '*.whl' | wc -l) wheels, $(du -sh "$cache" | cut -f1) (cache $cache)"
