#!/usr/bin/env bash
# The accelerator measurements of BENCHMARKS.md in one go, on a GPU or TPU host:
#   1. R50x1 at 224 px, bf16, per-device batch 64/128/256: ours beside the plain reference
#      (images/s per device, MFU), the input pipeline alone at batch 128 (JPEGs on local disk),
#      and at batch 256 in 4 micro-batches, weight standardization once per step against once per
#      micro-batch;
#   2. R152x4 at 224 px, bf16: per-device memory of data parallel beside FSDP compiled for as many
#      devices as this host has (at least 8), judged against this device's memory; on a host with
#      several devices, R152x4 trained with fsdp over all of them.
# Usage: benchmarks/accelerator.sh [OUTPUT_DIR]   (from the repository root; PYTHON=... to choose
# the interpreter). Each measurement is one JSON file in OUTPUT_DIR plus its readable report in
# OUTPUT_DIR/report.txt; paste report.txt into BENCHMARKS.md with the date and versions it starts
# with.
set -euo pipefail

out="${1:-benchmark_results/$(date -u +%Y%m%dT%H%M%SZ)}"
py="${PYTHON:-python}"
mkdir -p "$out"
report="$out/report.txt"

# The machine: versions, device kind and count, memory per device (0 where JAX does not say).
"$py" - > "$out/machine.json" <<'EOF'
import datetime, json, platform, flax, jax, optax
device = jax.devices()[0]
stats = device.memory_stats() or {}
print(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  "jax": jax.__version__, "jaxlib": jax.lib.__version__, "flax": flax.__version__,
                  "optax": optax.__version__, "python": platform.python_version(),
                  "platform": device.platform, "device_kind": device.device_kind,
                  "devices": jax.device_count(),
                  "memory_gib_per_device": stats.get("bytes_limit", 0) / 2**30}))
EOF
field() { "$py" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
devices="$(field "$out/machine.json" devices)"
memory_gib="$(field "$out/machine.json" memory_gib_per_device)"
{ echo "# $(date -u) on $(hostname)"; cat "$out/machine.json"; echo; } > "$report"

step_report() {
  "$py" -c "import json, sys; from benchmarks import train_step
print(train_step.report(json.load(open(sys.argv[1]))))" "$1" | tee -a "$report"
  echo >> "$report"
}

for batch in 64 128 256; do
  pipeline=()
  if [[ "$batch" == 128 ]]; then pipeline=(--pipeline=jpegs); fi
  name="$out/r50x1_224_bf16_batch$batch.json"
  echo "## python -m benchmarks.train_step --model=R50x1 --resolution=224 --batch=$batch" \
    "--precision=bf16 ${pipeline[*]}" >> "$report"
  "$py" -m benchmarks.train_step --model=R50x1 --resolution=224 --batch="$batch" \
    --precision=bf16 "${pipeline[@]}" --json > "$name"
  step_report "$name"
done

name="$out/r50x1_224_bf16_batch256_accum4_ws.json"
echo "## python -m benchmarks.train_step --model=R50x1 --resolution=224 --batch=256" \
  "--precision=bf16 --grad_accum=4 --ws_per_micro_batch --no_reference" >> "$report"
"$py" -m benchmarks.train_step --model=R50x1 --resolution=224 --batch=256 --precision=bf16 \
  --grad_accum=4 --ws_per_micro_batch --no_reference --json > "$name"
step_report "$name"

fake_devices=$(( devices > 8 ? devices : 8 ))
# shellcheck disable=SC2054  # --remat takes a comma-separated list.
memory_args=(--model=R152x4 --devices="$fake_devices" --fsdp="$fake_devices" --batch=8
             --resolution=224 --precision=bf16 --remat=none,unit,stage)
if [[ "$memory_gib" != "0.0" ]]; then memory_args+=(--device_memory_gib="$memory_gib"); fi
echo "## python -m benchmarks.memory ${memory_args[*]}" >> "$report"
"$py" -m benchmarks.memory "${memory_args[@]}" --json > "$out/r152x4_memory.json"
"$py" -c "import json, sys; from benchmarks import memory
print(memory.report(json.load(open(sys.argv[1]))))" "$out/r152x4_memory.json" | tee -a "$report"
echo >> "$report"

if (( devices > 1 )); then
  name="$out/r152x4_224_bf16_fsdp$devices.json"
  echo "## python -m benchmarks.train_step --model=R152x4 --resolution=224 --batch=8" \
    "--precision=bf16 --mesh.data=1 --mesh.fsdp=$devices --no_reference" >> "$report"
  "$py" -m benchmarks.train_step --model=R152x4 --resolution=224 --batch=8 --precision=bf16 \
    --mesh.data=1 --mesh.fsdp="$devices" --no_reference --json > "$name"
  step_report "$name"
fi
echo "Results in $out; the summary is $report."
