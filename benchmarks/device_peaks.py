"""Advertised dense peak FLOP/s per chip, for model FLOP utilization (MFU).

MFU = FLOPs of one step (XLA's cost analysis of the compiled step) / step time / peak of the
devices. Peaks are the vendors' dense figures (no structured sparsity). Where a chip shows up as
several JAX devices (TPU v3: two TensorCores per chip) the per-device peak is the chip's divided
among them.

float32: TPUs have no float32 matrix unit; at JAX's default precision a float32 matmul or
convolution runs as one bfloat16 pass, at the bfloat16 rate, so the float32 peak is the bfloat16
one. NVIDIA GPUs from the A100 on run float32 matmuls and convolutions on tensor cores as TF32 at
JAX's default precision, so the float32 peak is the TF32 one.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Peak:
  """Dense peak FLOP/s of one chip."""
  bfloat16: float
  float32: float
  devices_per_chip: int = 1

  def per_device(self, precision: str) -> float:
    return (self.bfloat16 if precision == "bf16" else self.float32) / self.devices_per_chip


# device_kind as JAX reports it -> peak per chip.
PEAKS = {
    # https://cloud.google.com/tpu/docs/v3: 123 TFLOPS bf16 per chip, 2 TensorCores per chip,
    # each its own JAX device.
    "TPU v3": Peak(123e12, 123e12, devices_per_chip=2),
    # https://cloud.google.com/tpu/docs/v4: 275 TFLOPS bf16 per chip (megacore: one device).
    "TPU v4": Peak(275e12, 275e12),
    # https://cloud.google.com/tpu/docs/v5e: 197 TFLOPS bf16 per chip.
    "TPU v5 lite": Peak(197e12, 197e12),
    # https://cloud.google.com/tpu/docs/v5p: 459 TFLOPS bf16 per chip.
    "TPU v5": Peak(459e12, 459e12),
    "TPU v5p": Peak(459e12, 459e12),
    # https://cloud.google.com/tpu/docs/v6e: 918 TFLOPS bf16 per chip.
    "TPU v6 lite": Peak(918e12, 918e12),
    # NVIDIA A100 Tensor Core GPU datasheet (SXM and PCIe alike): BF16 312 TFLOPS, TF32 156 TFLOPS
    # dense.
    "NVIDIA A100": Peak(312e12, 156e12),
    # NVIDIA H100 Tensor Core GPU datasheet, SXM: BF16 989 TFLOPS, TF32 494 TFLOPS dense
    # (the datasheet's 1,979 and 989 are with sparsity).
    "NVIDIA H100 80GB HBM3": Peak(989e12, 494e12),
    # Same datasheet, PCIe: BF16 756 TFLOPS, TF32 378 TFLOPS dense.
    "NVIDIA H100 PCIe": Peak(756e12, 378e12),
    # NVIDIA H200 datasheet, SXM: the H100 SXM's tensor cores, BF16 989 TFLOPS, TF32 494 TFLOPS
    # dense.
    "NVIDIA H200": Peak(989e12, 494e12),
}


def peak_flops_per_device(device_kind: str, precision: str) -> float | None:
  """Peak FLOP/s of one JAX device of `device_kind` at "bf16" or "f32"; None when unknown.

  TPU kinds match exactly ("TPU v5" is not "TPU v5 lite"); GPU kinds by prefix, since the
  memory size follows the model name ("NVIDIA A100-SXM4-80GB", "NVIDIA H200 NVL" is not listed:
  it is the PCIe-class part).
  """
  if precision not in ("bf16", "f32"):
    raise ValueError(f"precision must be 'bf16' or 'f32', got {precision!r}.")
  if device_kind in PEAKS:
    return PEAKS[device_kind].per_device(precision)
  for kind, peak in PEAKS.items():
    if kind.startswith("NVIDIA") and device_kind.startswith(kind) and "NVL" not in device_kind:
      return peak.per_device(precision)
  return None
