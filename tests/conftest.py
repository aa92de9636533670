"""Test set-up: eight fake CPU devices so sharding is exercised on any machine, and the tiers.

Two tiers, by folder: `tests/unit` (in-process, tiny networks, marker `unit`) and `tests/e2e`
(the programs in subprocesses, signals, multi-process jobs, sweeps, libtpu compiles, TFLite;
marker `e2e`). `pytest tests` runs both; `pytest -m unit` the fast one.

Compiling a ResNet train step takes XLA's CPU backend 10-20 s on 2 cores; the persistent
compilation cache lets the CLI runs of the tests, which run the same programs in fresh
processes, skip compiling again. Subprocesses inherit it.
"""

import os
import pathlib
import tempfile

# Must happen before JAX is imported anywhere in the test process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# libtpu (installed for the pre-flight tests) would otherwise be asked for TPU chips by every
# process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402  (after the environment is set for JAX)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
  """A TFDS data_dir holding both variants of the built-in data set, prepared once."""
  from big_transfer import data
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  for variant in ("upstream", "downstream"):
    data.dataset_info(data.InputConfig(dataset=f"bit_synthetic/{variant}", data_dir=data_dir))
  return data_dir


def pytest_collection_modifyitems(items):
  for item in items:
    tier = "e2e" if "e2e" in pathlib.Path(str(item.path)).parts else "unit"
    item.add_marker(getattr(pytest.mark, tier))
