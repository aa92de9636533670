"""The optimizers (BiT's SGD with momentum; big_vision's Adam for distillation) and the
learning-rate schedule.

This module is the one owner of the schedule: every recipe states its peak rate, warm-up, total
steps and either the fractions of the run after which the rate drops x10 or a cosine decay;
`Schedule.from_config` resolves them and `Schedule.learning_rate(step)` is what the train step
applies.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from big_transfer import errors

# The rate is multiplied by this after each decay step, as in the paper and the released code.
DECAY_FACTOR = 0.1
# BiT's SGD momentum, upstream and downstream.
MOMENTUM = 0.9
# How the rate falls after the warm-up (`config.lr_decay`): x0.1 steps (BiT) or a cosine to 0
# (big_vision's distillation recipes).
LR_DECAYS = ("steps", "cosine")
OPTIMIZERS = ("sgd_momentum", "adam")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A resolved schedule: linear warm-up, then x0.1 after each decay step or a cosine decay.

  Attributes:
    peak_lr: the rate reached at the end of the warm-up.
    warmup_steps: steps of the linear warm-up from 0.
    decay_steps: steps after which the rate is multiplied by `DECAY_FACTOR`: the rate at a decay
      step itself is still the previous one.
    total_steps: number of updates of the run.
    cosine: after the warm-up, `peak_lr * (1 + cos(pi * progress)) / 2` with progress going from
      0 at the end of the warm-up to 1 at `total_steps` (instead of decay steps).
  """
  peak_lr: float
  warmup_steps: int
  decay_steps: tuple[int, ...]
  total_steps: int
  cosine: bool = False

  def __post_init__(self):
    if self.total_steps < 1:
      raise errors.ConfigError(f"total_steps must be >= 1, got {self.total_steps}; set "
                               "--config.total_steps to the number of updates to run.")
    if not self.peak_lr > 0:  # NaN too.
      raise errors.ConfigError(f"lr must be positive, got {self.peak_lr}.")
    if not 0 <= self.warmup_steps <= self.total_steps:
      raise errors.ConfigError(f"warmup_steps must be in [0, total_steps={self.total_steps}], "
                               f"got {self.warmup_steps}.")
    if list(self.decay_steps) != sorted(self.decay_steps):
      raise errors.ConfigError(f"Decay steps must be increasing, got {self.decay_steps}.")
    if self.cosine and self.decay_steps:
      raise errors.ConfigError(f"A cosine decay has no decay steps, got {self.decay_steps}; set "
                               "--config.decay_fractions='()' or --config.lr_decay=steps.")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Schedule":
    """Resolves `lr`, `warmup_steps`, `total_steps`, `lr_decay` and `decay_fractions` of a run
    config."""
    if config.lr_decay not in LR_DECAYS:
      raise errors.ConfigError(f"lr_decay must be one of {LR_DECAYS}, got {config.lr_decay!r}.")
    fractions = tuple(config.decay_fractions)
    if any(not 0 < f < 1 for f in fractions):
      raise errors.ConfigError("decay_fractions must lie strictly between 0 and 1 (fractions "
                               f"of total_steps), got {fractions}.")
    return cls(peak_lr=float(config.lr), warmup_steps=int(config.warmup_steps),
               decay_steps=tuple(round(f * config.total_steps) for f in fractions),
               total_steps=int(config.total_steps), cosine=config.lr_decay == "cosine")

  def learning_rate(self, step: jax.Array | int) -> jax.Array:
    """The rate of the update made at `step` (0-based), float32; jit-compatible."""
    step = jnp.asarray(step, jnp.float32)
    rate = jnp.asarray(self.peak_lr, jnp.float32)
    if self.warmup_steps:
      rate = rate * jnp.minimum(step / self.warmup_steps, 1.0)
    if self.cosine:
      span = max(self.total_steps - self.warmup_steps, 1)
      progress = jnp.clip((step - self.warmup_steps) / span, 0.0, 1.0)
      rate = rate * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    for decay in self.decay_steps:
      rate = jnp.where(step > decay, rate * DECAY_FACTOR, rate)
    return rate

  def describe(self, batch_size: int, train_examples: int | None = None) -> str:
    """One line for the start of a run's log: rate, warm-up, decays, total steps and epochs."""
    epochs = lambda steps: (f" = {steps * batch_size / train_examples:.3g} epochs"
                            if train_examples else "")
    decays = ", ".join(str(s) for s in self.decay_steps) or "none"
    decay = ("cosine decay to 0" if self.cosine else f"x{DECAY_FACTOR:g} after steps {decays}")
    return (f"lr {self.peak_lr:.6g} at global batch {batch_size}, linear warm-up "
            f"{self.warmup_steps} steps{epochs(self.warmup_steps)}, {decay}; "
            f"{self.total_steps} steps{epochs(self.total_steps)} in all")


def weight_decay_mask(params):
  """Returns a pytree of bools like `params`: True for the leaves weight decay applies to.

  Decay is for conv and dense kernels, the only parameters of ResNet-v2 with two or more
  dimensions. GroupNorm scales and offsets and biases are vectors: they hold few parameters, so
  decaying them regularizes little, while pulling a GroupNorm scale towards zero shuts its
  channels off. Deciding by number of dimensions rather than by name holds for both the flax
  names (`kernel`, `scale`, `bias`) and the published ones (`kernel`, `gamma`, `beta`).
  """
  return jax.tree.map(lambda leaf: jnp.ndim(leaf) >= 2, params)


def make_optimizer(momentum: float = MOMENTUM, weight_decay: float = 0.0,
                   grad_clip_norm: float | None = None) -> optax.GradientTransformation:
  """SGD with momentum as BiT trained it, up to the learning rate: clip, add decay, accumulate.

  Its updates are the momentum buffer; the train step multiplies them by `-lr(state.step)`, so
  the rate follows the run's step even when a non-finite step leaves the optimizer state as it
  was (an optax schedule would count in its own state and drift).

  Args:
    momentum: momentum coefficient; the buffer is `m <- momentum * m + g` and the update
      `-lr * m` (TF's MomentumOptimizer), kept in float32 whatever the gradients' dtype.
    weight_decay: coupled L2: `weight_decay * w` is added to the (clipped) gradient before
      momentum, which is the same as adding `weight_decay / 2 * ||w||^2` to the loss, as the
      paper's TF/Keras SGD did (1e-4 upstream, 0 downstream). It is not AdamW-style decoupled
      decay. Only kernels are decayed, see `weight_decay_mask`.
    grad_clip_norm: if set, gradients are first rescaled to at most this global L2 norm.
  """
  if momentum < 0 or momentum >= 1:
    raise errors.ConfigError(f"momentum must be in [0, 1), got {momentum}.")
  _check_decay_and_clip(weight_decay, grad_clip_norm)
  return _chain(_sgd_parts(momentum, weight_decay, grad_clip_norm))


def _check_decay_and_clip(weight_decay: float, grad_clip_norm: float | None) -> None:
  if weight_decay < 0:
    raise errors.ConfigError(f"weight_decay must be >= 0, got {weight_decay}; use 0 to turn it "
                             "off.")
  if grad_clip_norm is not None and grad_clip_norm <= 0:
    raise errors.ConfigError(f"grad_clip_norm must be positive, got {grad_clip_norm}; use None to "
                             "turn clipping off.")


def _chain(parts) -> optax.GradientTransformation:
  return optax.chain(*(transform for _, transform in parts))


def _sgd_parts(momentum, weight_decay, grad_clip_norm):
  """(name, transformation) of each stage of the optimizer, in the order they apply."""
  parts = []
  if grad_clip_norm is not None:
    # Clip the loss gradient alone, so the decay term does not eat into the clipping budget.
    parts.append(("clip_by_global_norm", optax.clip_by_global_norm(grad_clip_norm)))
  if weight_decay:
    parts.append(("add_decayed_weights",
                  optax.add_decayed_weights(weight_decay, mask=weight_decay_mask)))
  parts.append(("trace", optax.trace(decay=momentum, accumulator_dtype=jnp.float32)))
  return parts


def make_adam(weight_decay: float, peak_lr: float,
              grad_clip_norm: float | None = None) -> optax.GradientTransformation:
  """Adam as big_vision's distillation recipes run it, up to the learning rate.

  big_vision's update is `-s(step) * (lr * adam(clip(g)) + wd * w)` with `s` the schedule's
  multiplier: the decay is decoupled from the gradient and follows the schedule, not the rate.
  The train step multiplies these updates by `lr(step) = peak_lr * s(step)`, so the decay term
  here is `weight_decay / peak_lr * w`. Adam's defaults (b1 0.9, b2 0.999, eps 1e-8); the first
  moment is kept in bfloat16 (big_vision's `mu_dtype`), halving the memory it takes.

  Args:
    weight_decay: big_vision's `wd` (e.g. 3e-4 for ImageNet), on kernels only (`weight_decay_mask`).
    peak_lr: the schedule's peak rate, which the step multiplies back in.
    grad_clip_norm: if set, gradients are first rescaled to at most this global L2 norm.
  """
  _check_decay_and_clip(weight_decay, grad_clip_norm)
  return _chain(_adam_parts(weight_decay, peak_lr, grad_clip_norm))


def _adam_parts(weight_decay, peak_lr, grad_clip_norm):
  """(name, transformation) of each stage of `make_adam`, in the order they apply."""
  parts = []
  if grad_clip_norm is not None:
    parts.append(("clip_by_global_norm", optax.clip_by_global_norm(grad_clip_norm)))
  parts.append(("scale_by_adam", optax.scale_by_adam(mu_dtype=jnp.bfloat16)))
  if weight_decay:
    parts.append(("add_decayed_weights",
                  optax.add_decayed_weights(weight_decay / peak_lr, mask=weight_decay_mask)))
  return parts


def _check_optimizer(config: ml_collections.ConfigDict) -> None:
  if config.optimizer not in OPTIMIZERS:
    raise errors.ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r} "
                             "(--config.optimizer).")


def optimizer_from_config(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The update direction a run config names (`config.optimizer`)."""
  _check_optimizer(config)
  if config.optimizer == "adam":
    return make_adam(config.weight_decay, float(config.lr), config.grad_clip_norm)
  return make_optimizer(config.momentum, config.weight_decay, config.grad_clip_norm)


def layout_from_config(config: ml_collections.ConfigDict) -> str:
  """The stages of the optimizer a run config names in order, e.g. "add_decayed_weights -> trace":
  what decides the structure of its state, which a checkpoint must share to be resumed."""
  _check_optimizer(config)
  parts = (_adam_parts(config.weight_decay, float(config.lr), config.grad_clip_norm)
           if config.optimizer == "adam" else
           _sgd_parts(config.momentum, config.weight_decay, config.grad_clip_norm))
  return " -> ".join(name for name, _ in parts)
