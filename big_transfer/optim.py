"""The optimizer (SGD with momentum, coupled weight decay) and the upstream learning-rate schedule."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from big_transfer import errors, hyperrule

# Upstream learning rates are given for this global batch size and scaled linearly with it.
UPSTREAM_BASE_BATCH_SIZE = 256


def weight_decay_mask(params):
  """Returns a pytree of bools like `params`: True for the leaves weight decay applies to.

  Decay is for conv and dense kernels, the only parameters of ResNet-v2 with two or more
  dimensions. GroupNorm scales and offsets and biases are vectors: they hold few parameters, so
  decaying them regularizes little, while pulling a GroupNorm scale towards zero shuts its
  channels off. Deciding by number of dimensions rather than by name holds for both the flax
  names (`kernel`, `scale`, `bias`) and the published ones (`kernel`, `gamma`, `beta`).
  """
  return jax.tree.map(lambda leaf: jnp.ndim(leaf) >= 2, params)


def make_optimizer(learning_rate: optax.Schedule | float, momentum: float = 0.9,
                   weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                   nesterov: bool = False) -> optax.GradientTransformation:
  """SGD with momentum as BiT trained it: clip, add coupled L2 decay, accumulate, scale by -lr.

  Args:
    learning_rate: a constant or a schedule of the step (e.g. `upstream_schedule`).
    momentum: momentum coefficient; the buffer is `m <- momentum * m + g` and the update
      `-lr * m` (TF's MomentumOptimizer), kept in float32 whatever the gradients' dtype.
    weight_decay: coupled L2: `weight_decay * w` is added to the (clipped) gradient before
      momentum, which is the same as adding `weight_decay / 2 * ||w||^2` to the loss, as the
      paper's TF/Keras SGD did (1e-4 upstream, 0 downstream). It is not AdamW-style decoupled
      decay. Only kernels are decayed, see `weight_decay_mask`.
    grad_clip_norm: if set, gradients are first rescaled to at most this global L2 norm.
    nesterov: use Nesterov momentum.
  """
  if momentum < 0 or momentum >= 1:
    raise errors.ConfigError(f"momentum must be in [0, 1), got {momentum}.")
  if weight_decay < 0:
    raise errors.ConfigError(f"weight_decay must be >= 0, got {weight_decay}; use 0 to turn it off.")
  if grad_clip_norm is not None and grad_clip_norm <= 0:
    raise errors.ConfigError(f"grad_clip_norm must be positive, got {grad_clip_norm}; use None to turn "
                     "clipping off.")
  steps = []
  if grad_clip_norm is not None:
    # Clip the loss gradient alone, so the decay term does not eat into the clipping budget.
    steps.append(optax.clip_by_global_norm(grad_clip_norm))
  if weight_decay:
    steps.append(optax.add_decayed_weights(weight_decay, mask=weight_decay_mask))
  steps.append(optax.trace(decay=momentum, nesterov=nesterov, accumulator_dtype=jnp.float32))
  steps.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*steps)


def upstream_schedule(base_lr: float, batch_size: int, warmup_steps: int,
                      decay_epochs: Sequence[float], steps_per_epoch: int) -> optax.Schedule:
  """The upstream rate: `base_lr * batch_size / 256`, linear warm-up, x0.1 at each decay epoch.

  E.g. BiT-S/M: `upstream_schedule(0.03, 4096, 5000, (30, 60, 80), 1_281_167 // 4096)`. A decay
  epoch `e` becomes step `round(e * steps_per_epoch)`; that step still uses the previous rate.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}; it is the "
                     "training set size divided by the global batch size.")
  decay_steps = tuple(round(epoch * steps_per_epoch) for epoch in decay_epochs)
  return hyperrule.step_decay_schedule(base_lr * batch_size / UPSTREAM_BASE_BATCH_SIZE,
                                       warmup_steps, decay_steps)
