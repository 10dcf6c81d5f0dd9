#!/usr/bin/env bash
# The GPU path on a machine with an NVIDIA GPU, in one command (about 6
# minutes on a 16-core H200 box; 8 at most):
#   1. build (release, so the bench measures what ships);
#   2. the probe: `vodfarm worker --probe` (devices, NVDEC/NVENC, stages);
#   3. the GPU tests: native/ (loaders, NVRTC kernel compile, reference),
#      the worker's GPU plan and path selection, and gpu-worker/tests/gpu.rs:
#      NVDEC bit-exact with libavcodec, the CUDA scaler within 1 LSB of its
#      CPU reference, and the transcode job's own pipeline on the GPU
#      (NVENC where present, and the download + libx264 path): its HLS
#      decoded clean with `ffmpeg -xerror` and cut into the same segments
#      as the software path;
#   4. a real job through a real worker on the GPU (tests/it/worker.rs's
#      ladder test with `--gpu auto`: every source shape, its HLS checked
#      by ffprobe/ffmpeg; the worker must log "frames stay on the GPU")
#      when PostgreSQL answers on 127.0.0.1:5432 (the coordinator needs
#      it); otherwise it says SKIPPED and why;
#   5. the bench: benches/gpu_transcode.rs, whose last line is
#      `gpu: stages=… ours_fps=… peer_fps=… ratio=… psnr_delta_db=…`.
# Needs the NVIDIA driver (libcuda, libnvcuvid, libnvidia-encode where the
# GPU has NVENC), an ffmpeg built with CUDA (-hwaccel cuda, scale_cuda,
# h264_nvenc) for the peer, and NVRTC (the CUDA toolkit's, or PyPI's
# nvidia-cuda-nvrtc-cu12, installed here when missing).
# Fails loudly when no GPU is visible: the GPU tests would only say
# "did NOT run", which is no result.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU visible (nvidia-smi -L fails); run this on a GPU machine" >&2
  exit 1
fi
nvidia-smi -L

# Offline GPU boxes: deps.sh only installs what is missing; say so and go
# on with what is there when the package mirrors cannot be reached.
bash scripts/deps.sh >/dev/null || echo "gpu-check: scripts/deps.sh failed (offline?); using what is installed"
if [ -z "${NVRTC_LIB:-}" ]; then
  for lib in /usr/local/cuda/lib64/libnvrtc.so.12 /usr/lib/x86_64-linux-gnu/libnvrtc.so.12; do
    [ -e "$lib" ] && NVRTC_LIB=$lib && break
  done
fi
if [ -z "${NVRTC_LIB:-}" ]; then
  if ! python3 -c 'import nvidia.cuda_nvrtc' >/dev/null 2>&1; then
    # NVRTC_WHEEL: a downloaded nvidia_cuda_nvrtc_cu12-*.whl for offline boxes.
    src=${NVRTC_WHEEL:-nvidia-cuda-nvrtc-cu12==12.9.86}
    python3 -m pip install -q "$src" || python3 -m pip install -q --break-system-packages "$src" \
      || echo "gpu-check: could not install NVRTC ($src)" >&2
  fi
  NVRTC_LIB=$(python3 -c 'import nvidia.cuda_nvrtc as m; print(list(m.__path__)[0] + "/lib/libnvrtc.so.12")' 2>/dev/null || true)
fi
if [ -z "${NVRTC_LIB:-}" ] || [ ! -e "$NVRTC_LIB" ]; then
  echo "gpu-check: no libnvrtc.so.12 (set NVRTC_LIB or NVRTC_WHEEL); the CUDA scaler cannot be tested" >&2
  exit 1
fi
export NVRTC_LIB
echo "NVRTC_LIB=$NVRTC_LIB"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-$(nproc)}

stamp "build (release)"
cargo build --locked --release --bin vodfarm
cargo test --locked --release -p vodfarm-native -p vodfarm-gpu-worker --no-run
cargo bench --locked --bench gpu_transcode --no-run
e2e=0
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
  e2e=1
  cargo test --locked --release --test it --no-run
fi

stamp "probe"
./target/release/vodfarm worker --probe | tee /tmp/vodfarm-gpu-probe.json
python3 - <<'PY'
import json
doc = json.load(open("/tmp/vodfarm-gpu-probe.json"))
assert doc["cuda"]["available"], doc["cuda"]
assert doc["devices"], "no devices in the probe"
s = doc["stages"]
print("stages:", doc["summary"], "| encode:", s["encode"]["implementation"], "-", s["encode"]["reason"] or "on the GPU")
PY

stamp "GPU tests"
log=$(mktemp)
{
  cargo test --locked --release -p vodfarm-native -- --nocapture
  cargo test --locked --release -p vodfarm-gpu-worker --lib -- media::gpu --nocapture
  cargo test --locked --release -p vodfarm-gpu-worker --test gpu -- --nocapture --test-threads=1
} 2>&1 | tee "$log" | grep -E "^test |test result|NVDEC:|CUDA scaler:|GPU job path|did NOT run|NOT RUN|panicked" || true
if grep -q "FAILED\|panicked" "$log"; then
  echo "gpu-check: GPU tests failed (log: $log)" >&2
  exit 1
fi
if grep -q "did NOT run\|NOT RUN: gpu::" "$log"; then
  echo "gpu-check: a GPU test did not run on this GPU machine (log: $log)" >&2
  exit 1
fi
for want in "NVDEC:" "CUDA scaler:" "GPU job path"; do
  grep -q "$want" "$log" || { echo "gpu-check: no '$want' result in the GPU tests" >&2; exit 1; }
done

stamp "a real job through a real worker on the GPU"
if [ "$e2e" = 1 ]; then
  VODFARM_TEST_GPU=auto TEST_LOG=info timeout 240 \
    cargo test --locked --release --test it -- worker::sources_of_every_shape --nocapture 2>&1 \
    | tee "$log" | grep -E "^test |test result|frames stay on the GPU|stage runs on the CPU|panicked" || true
  grep -q "test result: ok" "$log" || { echo "gpu-check: the worker job test failed on the GPU (log: $log)" >&2; exit 1; }
  grep -q "frames stay on the GPU" "$log" || { echo "gpu-check: the worker ran no job on the GPU path (log: $log)" >&2; exit 1; }
else
  echo "gpu-check: SKIPPED the worker job test: no PostgreSQL answers on 127.0.0.1:5432 (bash scripts/services.sh starts one); the pipeline-level GPU job test above ran"
fi

stamp "bench (GPU mode)"
BENCH_SECONDS=${BENCH_SECONDS:-30} cargo bench --locked --bench gpu_transcode 2>&1 | tee "$log" | grep -v "^\s*Compiling" || true
stamp "done"
tail -n1 "$log" | grep -q "^gpu: stages=" || { echo "gpu-check: the bench gave no result line" >&2; exit 1; }
tail -n1 "$log"
