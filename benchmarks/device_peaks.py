"""Advertised dense peak FLOP/s per JAX device, for model FLOP utilization (MFU).

MFU = FLOPs of one step (XLA's cost analysis of the compiled step) / step time / peak of the
devices. Peaks are the vendors' dense figures (no structured sparsity). TPU peaks and how many
JAX devices a chip is (two on v3) are `big_transfer.launch.tpu_types`' facts; this module only maps
the `device_kind` JAX reports onto a generation there, and holds the GPUs.

float32: TPUs have no float32 matrix unit; at JAX's default precision a float32 matmul or
convolution runs as one bfloat16 pass, at the bfloat16 rate, so the float32 peak is the bfloat16
one. NVIDIA GPUs from the A100 on run float32 matmuls and convolutions on tensor cores as TF32 at
JAX's default precision, so the float32 peak is the TF32 one.
"""

from big_transfer.launch import tpu_types

PRECISIONS = ("bf16", "f32")

# device_kind as JAX reports it -> the generation's prefix in tpu_types.GENERATIONS.
TPU_DEVICE_KINDS = {
    "TPU v3": "v3",
    "TPU v4": "v4",
    "TPU v5 lite": "v5litepod",
    "TPU v5": "v5p",
    "TPU v5p": "v5p",
    "TPU v6 lite": "v6e",
}

# device_kind prefix -> dense peak FLOP/s per GPU at (bf16, f32 as TF32).
GPU_PEAKS = {
    # NVIDIA A100 Tensor Core GPU datasheet (SXM and PCIe alike): BF16 312, TF32 156 TFLOPS dense.
    "NVIDIA A100": (312e12, 156e12),
    # NVIDIA H100 Tensor Core GPU datasheet, SXM: BF16 989, TF32 494 TFLOPS dense (the
    # datasheet's 1,979 and 989 are with sparsity).
    "NVIDIA H100 80GB HBM3": (989e12, 494e12),
    # Same datasheet, PCIe: BF16 756, TF32 378 TFLOPS dense.
    "NVIDIA H100 PCIe": (756e12, 378e12),
    # NVIDIA H200 datasheet, SXM: the H100 SXM's tensor cores, BF16 989, TF32 494 TFLOPS dense.
    "NVIDIA H200": (989e12, 494e12),
}


def peak_flops_per_device(device_kind: str, precision: str) -> float | None:
  """Peak FLOP/s of one JAX device of `device_kind` at "bf16" or "f32"; None when unknown.

  TPU kinds match exactly ("TPU v5" is not "TPU v5 lite"); GPU kinds by prefix, since the
  memory size follows the model name ("NVIDIA A100-SXM4-80GB"); "NVIDIA H200 NVL", the
  PCIe-class part with lower clocks, is not listed.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
  if device_kind in TPU_DEVICE_KINDS:
    return tpu_types.GENERATIONS[TPU_DEVICE_KINDS[device_kind]].peak_bf16_flops_per_device
  for kind, (bf16, f32) in GPU_PEAKS.items():
    if device_kind.startswith(kind) and "NVL" not in device_kind:
      return bf16 if precision == "bf16" else f32
  return None
