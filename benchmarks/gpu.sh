#!/usr/bin/env bash
# The GPU's numbers, on a machine with one CUDA GPU, in one of two parts:
#     bash benchmarks/gpu.sh OUTPUT_FOLDER          # every figure in benchmarks/gpu.md
#     bash benchmarks/gpu.sh OUTPUT_FOLDER shapes   # the shapes under 8,000 parameters on six folds
# gpu.md (on one H200 the timed steps took about 5 minutes, each 16-seed sweep 2 to 4): first the timings,
# each alone on the machine: speed.py's three recipes, the notebook headless at 15 and at 19 epochs, the
# tests (without tests/test_page.py where Node.js or Chromium is missing). Then the accuracy runs: 16 seeds
# of the notebook's training at 15 epochs, then at 19, all 16 seeds at once; last, alone, the reference
# recipe's seeds 1-3 at its 19 epochs (its per-image loader needs the CPU cores that the sweeps would take).
# shapes: crossval.py's GPU candidates (the public design first, then the own shapes under 8,000), 16 runs at
# once, stopped after SHAPES_SECONDS (default 480): every run that ended is in OUTPUT_FOLDER/ledger.json.
# Every step's output goes to OUTPUT_FOLDER/STEP.log, its wall time to OUTPUT_FOLDER/times.txt; a failing
# step is recorded there and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu.sh OUTPUT_FOLDER [shapes]}
part=${2:-gpu.md}
[[ $part == gpu.md || $part == shapes ]] || { echo "gpu.sh: the part must be 'shapes' or left out, got '$part'" >&2; exit 2; }
mkdir -p "$out"
export MPLBACKEND=Agg PYTHONUNBUFFERED=1 TQDM_DISABLE=1  # sixteen runs' progress bars would drown the logs

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch; print(f'Python {sys.version.split()[0]}, PyTorch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}')"
  echo "$(nproc) CPU cores"
} | tee "$out/machine.txt"

timed() {  # timed STEP COMMAND...: run COMMAND, its output into STEP.log, "STEP: seconds (exit code)" into times.txt
  local step=$1 start status
  shift
  start=$(date +%s.%N)
  "$@" >"$out/$step.log" 2>&1
  status=$?
  awk -v step="$step" -v start="$start" -v end="$(date +%s.%N)" -v status="$status" \
    'BEGIN { printf "%s: %.1f s (exit %d)\n", step, end - start, status }' | tee -a "$out/times.txt"
  return "$status"
}

if [[ $part == shapes ]]; then
  # One short run first, so that a broken setup fails in seconds rather than after the sweep's minutes.
  timed smoke python3 -c "
import torch, utils
images, labels = utils.mnist_tensors(train=True, device='cuda')
model, history = utils.train_network(utils.Recipe(network='shape:public', epochs=1, precision='bfloat16'),
                                     images[:2560], labels[:2560], images[-1000:], labels[-1000:], verbose=False)
print(history.device, history.test_acc)" || exit 1
  timed shapes timeout -s INT -k 30 "${SHAPES_SECONDS:-480}" python3 benchmarks/crossval.py --processes 16 \
    gpu-shape-public gpu-shape-small-unpadded gpu-shape-small-unpadded-14 gpu-shape-small-28x2-unpadded \
    gpu-shape-small-unpadded-head gpu-shape-small-unpadded-activated
  cp benchmarks/ledger.json "$out/ledger.json" && echo "wrote $out/ledger.json"
  exit
fi

timed speed python3 benchmarks/speed.py --device cuda --epochs 3
for epochs in 15 19; do
  timed "notebook-$epochs" papermill S6.ipynb "$out/S6.gpu-$epochs.ipynb" -p EPOCHS "$epochs"
done
page_tests=()
command -v node >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } ||
  page_tests=(--ignore=tests/test_page.py)
timed tests python3 -m pytest -p no:cacheprovider "${page_tests[@]}"

seeds="$(seq 1 16)"
for epochs in 15 19; do
  timed "seeds-$epochs" python3 benchmarks/seeds.py --direct --device cuda --widths 8 --seeds $seeds --processes 16 \
    --epochs "$epochs" --out "$out/seeds-$epochs"
done
timed reference python3 benchmarks/seeds.py --reference --device cuda --seeds 1 2 3 --epochs 19 --processes 3 \
  --out "$out/reference"
