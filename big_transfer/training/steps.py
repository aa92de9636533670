"""The train state and the pure, jit-able train, eval and feature steps.

Nothing here knows about devices: `experiment.jit_steps` jits these functions once with the
shardings that `sharding.py` decides. The train step never synchronizes with the host: a step
whose loss, gradients or new parameters are not finite is recorded in the state (and its update
skipped) for the loop to report at its next look.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from big_transfer import errors
from big_transfer.training import losses

LOSSES = {"softmax_xent": losses.softmax_cross_entropy,
          "sigmoid_xent": losses.sigmoid_cross_entropy}


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; one pytree, sharded and checkpointed as a whole.

  Attributes:
    step: int32 scalar, number of updates applied.
    params: the model's parameters (float32).
    opt_state: the optimizer's state.
    first_bad_step: int32 scalar, the first step whose loss, gradients or new parameters were
      not finite, or -1.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  first_bad_step: jax.Array


def loss_function(name: str) -> Callable:
  if name not in LOSSES:
    raise errors.ConfigError(f"Unknown loss {name!r}; choose one of {sorted(LOSSES)}.")
  return LOSSES[name]


def create_train_state(rng: jax.Array, model: nn.Module, optimizer: optax.GradientTransformation,
                       image_shape: tuple[int, int, int]) -> TrainState:
  """Initializes parameters and optimizer state; jit it with the state's out_shardings."""
  params = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), first_bad_step=jnp.full((), -1, jnp.int32))


def _split_micro_batches(batch: dict, grad_accum_steps: int) -> dict:
  """(B, ...) -> (grad_accum_steps, B / grad_accum_steps, ...), each micro-batch spread evenly.

  Example b goes to micro-batch b % grad_accum_steps, so every device, which holds a contiguous
  slice of the batch, contributes equally to every micro-batch.
  """
  def split(x):
    micro = x.reshape(x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:])
    return jnp.swapaxes(micro, 0, 1)
  return jax.tree.map(split, batch)


def train_step(state: TrainState, batch: dict, *, model: nn.Module,
               optimizer: optax.GradientTransformation,
               learning_rate: Callable[[jax.Array], jax.Array],
               loss_name: str = "softmax_xent",
               grad_accum_steps: int = 1) -> tuple[TrainState, dict]:
  """One optimizer update on a global batch, towards its labels.

  Args:
    state: the current `TrainState`.
    batch: {"image": (B, H, W, 3) float32, "label": (B, K) float32 dense targets}.
    model: the network.
    optimizer, learning_rate, grad_accum_steps: as `descent_step`.
    loss_name: a key of `LOSSES`.
  Returns:
    (new state, {"loss", "grad_norm", "learning_rate"}: float32 scalars).
  """
  loss_fn = loss_function(loss_name)

  def loss_of(params, micro):
    return loss_fn(model.apply({"params": params}, micro["image"]), micro["label"])

  return descent_step(state, batch, loss_of, optimizer=optimizer, learning_rate=learning_rate,
                      grad_accum_steps=grad_accum_steps)


def descent_step(state: TrainState, batch: dict, loss_of: Callable[[Any, dict], jax.Array], *,
                 optimizer: optax.GradientTransformation,
                 learning_rate: Callable[[jax.Array], jax.Array],
                 grad_accum_steps: int = 1) -> tuple[TrainState, dict]:
  """One optimizer update of `state.params` down the gradient of `loss_of` on a global batch.

  Args:
    state: the current `TrainState`.
    batch: a dict of (B, ...) arrays; `loss_of` reads the keys it needs.
    loss_of: (params, batch or micro-batch) -> float32 scalar mean loss.
    optimizer: the update direction (`optim.optimizer_from_config`), which the state was
      created with.
    learning_rate: the rate of the update at a step, e.g. `optim.Schedule.learning_rate`; it is
      evaluated at `state.step`, so it stays in step with the run whatever the optimizer counts.
    grad_accum_steps: split the batch into this many micro-batches, summed through `lax.scan`,
      so large batches fit in memory (one micro-batch's activations live at a time); the update
      equals the full-batch one.
  Returns:
    (new state, {"loss", "grad_norm", "learning_rate"}: float32 scalars).
  """
  grad_fn = jax.value_and_grad(loss_of)
  if grad_accum_steps == 1:
    loss, grads = grad_fn(state.params, batch)
  else:
    def accumulate(carry, micro):
      loss_sum, grad_sum = carry
      loss, grads = grad_fn(state.params, micro)
      return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (loss, grads), _ = jax.lax.scan(accumulate, (jnp.zeros((), jnp.float32), zeros),
                                    _split_micro_batches(batch, grad_accum_steps))
    loss, grads = loss / grad_accum_steps, jax.tree.map(lambda g: g / grad_accum_steps, grads)

  direction, opt_state = optimizer.update(grads, state.opt_state, state.params)
  rate = learning_rate(state.step)
  params = jax.tree.map(lambda p, d: p - rate * d, state.params, direction)
  # Finite gradients can still give non-finite parameters (a rate that overflows them).
  finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)
  # A bad step leaves params and optimizer state as they were, so the last good weights survive
  # to be saved; the step still counts, and the rate follows `state.step`.
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = TrainState(
      step=state.step + 1,
      params=keep(params, state.params),
      opt_state=keep(opt_state, state.opt_state),
      first_bad_step=jnp.where((state.first_bad_step < 0) & ~finite, state.step,
                               state.first_bad_step))
  return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": rate}


def _all_finite(tree) -> jax.Array:
  """bool scalar: every element of every leaf is finite."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def eval_step(params, batch: dict, *, model: nn.Module,
              loss_name: str = "softmax_xent") -> dict:
  """Sums over the real (mask 1) examples of a padded eval batch.

  Returns {"correct": top-1 hits, "loss": summed loss, "count": number of real examples}, all
  float32 scalars, to be added up over batches.
  """
  logits = model.apply({"params": params}, batch["image"])
  mask = batch["mask"]
  count = jnp.sum(mask)
  return {"correct": jnp.sum(losses.top1_correct(logits, batch["label"]) * mask),
          "loss": loss_function(loss_name)(logits, batch["label"], mask) * count,
          "count": count}


def logits_step(params, images: jax.Array, *, model: nn.Module) -> jax.Array:
  """Logits (B, K) of images (B, H, W, 3) in [-1, 1]: what evaluators score."""
  return model.apply({"params": params}, images)


def features_step(params, images: jax.Array, *, model: nn.Module) -> jax.Array:
  """Pre-logits features (B, D) of a model built with `num_classes=None`."""
  params = {k: v for k, v in params.items() if k != "head"}
  return model.apply({"params": params}, images)
