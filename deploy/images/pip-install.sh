#!/bin/sh
# Inside an image build: the virtual environment /opt/zoo with keras-zoo[EXTRAS] from the
# source in the working directory, pinned by constraints.txt. pip-install.sh EXTRAS WHEELS
# - Wheels in WHEELS (`make wheelhouse` put them in the build context): installs from them
#   alone (--no-index), so the build needs no package index.
# - Otherwise from the index pip is given: PIP_INDEX_URL / PIP_EXTRA_INDEX_URL build args.
# - Extra CA certificates (*.pem, *.crt) in /tmp/extra-ca (deploy/ca-certificates/ in the
#   context) are added to Debian's bundle for pip: a proxy that re-signs TLS.
set -eu
extras=$1 wheels=$2
cas=$(find /tmp/extra-ca -type f \( -name '*.pem' -o -name '*.crt' \) 2>/dev/null | sort)
if [ -n "$cas" ]; then
  # shellcheck disable=SC2086 # one file name per word
  cat /etc/ssl/certs/ca-certificates.crt $cas >/tmp/pip-ca.pem
  export PIP_CERT=/tmp/pip-ca.pem
  echo "pip trusts the system CAs and $(echo "$cas" | wc -l) extra certificate file(s)"
fi
if ls "$wheels"/*.whl >/dev/null 2>&1; then
  set -- --no-index --find-links "$wheels"
  echo "installing from the wheelhouse $wheels ($(ls "$wheels"/*.whl | wc -l) wheels)"
else
  set --
  echo "no wheelhouse: installing from the package index"
fi
python3 -m venv /opt/zoo
/opt/zoo/bin/pip install --no-cache-dir "$@" -c constraints.txt ".[$extras]"
# What only builds need, and TensorFlow's C++ headers (for compiling custom ops): not shipped.
/opt/zoo/bin/pip uninstall --quiet --yes pip setuptools wheel 2>/dev/null || true
site=$(/opt/zoo/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$site/tensorflow/include"
find /opt/zoo -depth -type d -name tests -path '*/site-packages/*/tests' -prune -exec rm -rf {} + || true
# Serve images only: tooling serving never imports (29 MB, which keeps the serve image under
# its 400 MB): ONNX's backend conformance data and reference evaluator, ONNX Runtime's offline
# optimizers and quantizer. Serving's `import onnx` (zoo.serving.sessions) and its sessions
# need none of them; export (train images) evaluates with onnx.reference, so they keep all.
case $extras in
  serve | serve-gpu) rm -rf "$site/onnx/backend/test" "$site/onnx/reference" "$site/onnxruntime/transformers" \
            "$site/onnxruntime/quantization" "$site/onnxruntime/tools" ;;
esac
# NVIDIA's CUDA wheels (GPU images): their library folders, for the dynamic linker's cache.
find "$site/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib 2>/dev/null | sort >/opt/zoo/nvidia-libs.conf
/opt/zoo/bin/python -c "import zoo, server.cli"
