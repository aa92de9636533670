"""A TPU slice's devices as libtpu's compiler describes them, on any x86-64 Linux machine: what
the pre-flight compiles a run's train step for, without the hardware (`jax.experimental.topologies`).
"""

import os

import jax

from big_transfer import errors
from big_transfer.launch import tpu_types

# libtpu lays a slice out on hosts of 2x2x1 chips; a smaller slice is one host of its own size.
_HOST_BOUNDS = (2, 2, 1)


def libtpu_environment(tpu_slice: tpu_types.Slice) -> dict[str, str]:
  """The variables `compile_devices` sets (where unset) for libtpu to compile for `tpu_slice`."""
  return {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_WORKER_HOSTNAMES": "localhost",
          "TPU_ACCELERATOR_TYPE": tpu_slice.accelerator_type}


def compile_devices(tpu_slice: tpu_types.Slice) -> list[jax.Device]:
  """The devices of `tpu_slice` as libtpu's compiler describes them, without TPU hardware."""
  try:
    import libtpu  # noqa: F401  (only whether it is installed matters)
    from jax.experimental import topologies
  except ImportError:
    raise errors.UserError("The pre-flight compiles with libtpu, which is not installed: "
                           "pip install -e '.[tpu]' (any x86-64 Linux machine; no TPU needed)."
                           ) from None
  # Compiling opens no chip, so several pre-flights may share a machine (libtpu otherwise locks
  # /tmp/libtpu_lockfile); naming this host as the only worker and the target as the accelerator
  # keeps libtpu from looking for a TPU VM's metadata and warning that there is none.
  for variable, value in libtpu_environment(tpu_slice).items():
    os.environ.setdefault(variable, value)
  shape = (*tpu_slice.shape, 1)[:3]
  options = {"chips_per_host_bounds": tuple(map(min, shape, _HOST_BOUNDS))}
  if tpu_slice.chip_config_name:
    options["chip_config_name"] = tpu_slice.chip_config_name
  try:
    return topologies.get_topology_desc(tpu_slice.jax_topology, "tpu", **options).devices
  except jax.errors.JaxRuntimeError as e:
    if not str(e).startswith("INVALID_ARGUMENT"):
      raise
    raise errors.ConfigError(f"libtpu has no TPU topology {tpu_slice.jax_topology}: {e}. Use an "
                             "accelerator type (v4-32, v5litepod-16) for a standard slice."
                             ) from None
