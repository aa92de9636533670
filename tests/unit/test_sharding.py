"""Specification of the mesh, the parameter rule table and the batch layout on 8 fake devices."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from big_transfer import errors, sharding


def _params():
  return {
      "root": {"kernel": jnp.arange(7 * 7 * 3 * 64, dtype=jnp.float32).reshape(7, 7, 3, 64)},
      "unit": {"kernel": jnp.ones((3, 3, 64, 256)), "bias": jnp.arange(7.0)},
      "head": {"kernel": jnp.ones((2048, 1000)), "bias": jnp.zeros((1000,))},
  }


def _specs(shardings):
  return jax.tree.map(lambda s: s.spec, shardings)


@pytest.mark.parametrize("data, fsdp, shape", [(8, 1, (8, 1)), (4, 2, (4, 2)), (-1, 2, (4, 2)),
                                               (2, -1, (2, 4)), (-1, 1, (8, 1))])
def test_make_mesh_shapes(data, fsdp, shape):
  mesh = sharding.make_mesh(data=data, fsdp=fsdp)
  assert mesh.axis_names == sharding.AXES
  assert tuple(mesh.shape.values()) == shape


def test_make_mesh_mismatch_names_sizes_devices_and_flag():
  with pytest.raises(ValueError, match=r"data=3 x fsdp=2 does not fit 8 devices.*--config.mesh"):
    sharding.make_mesh(data=3, fsdp=2)


def test_make_mesh_rejects_two_free_axes():
  with pytest.raises(ValueError, match="all -1"):
    sharding.make_mesh(data=-1, fsdp=-1)


def test_fsdp_shards_largest_divisible_dimension():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  specs = _specs(sharding.param_shardings(_params(), mesh, min_fsdp_size=1))
  assert specs["unit"]["kernel"] == PartitionSpec(None, None, None, "fsdp")
  assert specs["head"]["kernel"] == PartitionSpec("fsdp")


def test_fsdp_replicates_indivisible_bias():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  specs = _specs(sharding.param_shardings(_params(), mesh, min_fsdp_size=1))
  assert specs["unit"]["bias"] == PartitionSpec()


def test_fsdp_replicates_small_tensors():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  specs = _specs(sharding.param_shardings(_params(), mesh))
  assert specs["root"]["kernel"] == PartitionSpec()  # 9408 elements < 2**16
  assert specs["head"]["bias"] == PartitionSpec()
  assert specs["unit"]["kernel"] == PartitionSpec(None, None, None, "fsdp")  # 147456 elements


def test_first_matching_rule_wins():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  rules = ((".*head.*", "replicate"), (".*", "fsdp"))
  specs = _specs(sharding.param_shardings(_params(), mesh, rules=rules, min_fsdp_size=1))
  assert specs["head"]["kernel"] == PartitionSpec()
  assert specs["unit"]["kernel"] == PartitionSpec(None, None, None, "fsdp")


def test_unknown_rule_is_rejected():
  mesh = sharding.make_mesh()
  with pytest.raises(ValueError, match="Unknown sharding rule 'shard'"):
    sharding.param_shardings(_params(), mesh, rules=((".*", "shard"),))


def test_unmatched_path_is_named():
  mesh = sharding.make_mesh()
  with pytest.raises(ValueError, match="'head/bias'"):
    sharding.param_shardings(_params(), mesh, rules=(("kernel", "fsdp"),))


def test_optimizer_state_mirrors_params_and_replicates_scalars():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  params = _params()
  state = jax.eval_shape(optax.chain(optax.clip_by_global_norm(1.0), optax.trace(0.9),
                                     optax.scale_by_schedule(optax.constant_schedule(1.0))).init,
                         params)
  specs = _specs(sharding.param_shardings(state, mesh, min_fsdp_size=1))
  assert specs[1].trace == _specs(sharding.param_shardings(params, mesh, min_fsdp_size=1))
  assert specs[2].count == PartitionSpec()


def test_device_put_with_shardings_round_trips_values():
  mesh = sharding.make_mesh(data=2, fsdp=4)
  params = _params()
  placed = jax.device_put(params, sharding.param_shardings(params, mesh, min_fsdp_size=1))
  assert placed["unit"]["kernel"].sharding.spec == PartitionSpec(None, None, None, "fsdp")
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(placed), params)


def test_batch_sharding_splits_leading_axis_over_all_devices():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  batch = jax.device_put(np.zeros((16, 5), np.float32), sharding.batch_sharding(mesh))
  assert {shard.data.shape for shard in batch.addressable_shards} == {(2, 5)}
  assert sharding.replicated(mesh).spec == PartitionSpec()


def test_check_batch_size_names_numbers_and_fix():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  sharding.check_batch_size(64, mesh, grad_accum_steps=4)
  with pytest.raises(ValueError, match=r"batch size 60 .* grad_accum_steps 2 x 8 .* = 16.*"
                                       r"--config.batch_size to a multiple of 16"):
    sharding.check_batch_size(60, mesh, grad_accum_steps=2)


def test_check_eval_batch_size_names_numbers_and_fix():
  mesh = sharding.make_mesh(data=4, fsdp=2)
  sharding.check_eval_batch_size(24, mesh)
  with pytest.raises(errors.ConfigError, match=re.escape(
      "eval_batch_size 20 is not divisible by the 8 batch devices (data=4 x fsdp=2); set "
      "--config.eval_batch_size to a multiple of 8.")):
    sharding.check_eval_batch_size(20, mesh)


def test_describe_is_one_line_with_topology_and_per_device_batch():
  line = sharding.describe(sharding.make_mesh(data=4, fsdp=2), 64, grad_accum_steps=2)
  assert "\n" not in line
  assert "8 local / 8 global devices" in line
  assert "data=4 x fsdp=2" in line
  assert "4 per device" in line
