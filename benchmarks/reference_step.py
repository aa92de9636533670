"""A straightforward ResNet-v2 GN+WS train step, the yardstick our real step is timed against.

What a user would write from the flax examples in an afternoon: `nn.GroupNorm`, a convolution
that standardizes its kernel in `__call__`, `flax.training.train_state.TrainState`, SGD with
momentum from optax, one `jax.jit`. Same architecture, shapes, dtypes and sharding rules as ours,
so that any difference in speed or memory is the implementation's.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from big_transfer import models, sharding


class StandardizedConv(nn.Module):
  """Bias-free convolution whose kernel is standardized per output channel on every call."""
  features: int
  kernel_size: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
    kernel = self.param("kernel", nn.initializers.he_normal(), shape, jnp.float32)
    mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
    var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
    kernel = (kernel - mean) / jnp.sqrt(var + 1e-10)
    pad = self.kernel_size // 2
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), (self.strides, self.strides),
        ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Unit(nn.Module):
  """Pre-activation bottleneck."""
  mid: int
  strides: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    norm = functools.partial(nn.GroupNorm, num_groups=32, epsilon=1e-5, dtype=self.dtype)
    conv = functools.partial(StandardizedConv, dtype=self.dtype)
    y = nn.relu(norm()(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != 4 * self.mid:
      shortcut = conv(4 * self.mid, 1, self.strides)(y)
    y = conv(self.mid, 1)(y)
    y = conv(self.mid, 3, self.strides)(nn.relu(norm()(y)))
    y = conv(4 * self.mid, 1)(nn.relu(norm()(y)))
    return shortcut + y


class PlainResNetV2(nn.Module):
  """ResNet-v2 with GroupNorm and weight standardization, written plainly."""
  blocks: tuple[int, ...]
  width: int
  num_classes: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, images):
    x = StandardizedConv(64 * self.width, 7, 2, dtype=self.dtype)(images)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, units in enumerate(self.blocks):
      for unit in range(units):
        x = Unit(64 * self.width * 2**stage, 2 if stage and not unit else 1, self.dtype)(x)
    x = nn.relu(nn.GroupNorm(num_groups=32, epsilon=1e-5, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=jnp.float32)(jnp.mean(x.astype(jnp.float32), (1, 2)))


def train_step(state: train_state.TrainState, batch: dict, grad_accum_steps: int = 1
               ) -> tuple[train_state.TrainState, dict]:
  """Softmax cross-entropy on {"image": (B, H, W, 3), "label": (B, K) one-hot}; one SGD update.

  With `grad_accum_steps` > 1 the gradient is summed over micro-batches in a `lax.scan`, the
  whole model (weight standardization included) running once per micro-batch. Example b goes to
  micro-batch b % grad_accum_steps, as ours, so that every device works on every micro-batch.
  """
  def loss_of(params, micro):
    logits = state.apply_fn({"params": params}, micro["image"])
    return optax.softmax_cross_entropy(logits, micro["label"]).mean()

  grad_fn = jax.value_and_grad(loss_of)
  if grad_accum_steps == 1:
    loss, grads = grad_fn(state.params, batch)
  else:
    micro_batches = jax.tree.map(
        lambda x: x.reshape(-1, grad_accum_steps, *x.shape[1:]).swapaxes(0, 1), batch)

    def accumulate(total, micro):
      return jax.tree.map(jnp.add, total, grad_fn(state.params, micro)), None

    zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
    (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro_batches)
    loss, grads = jax.tree.map(lambda x: x / grad_accum_steps, (loss, grads))
  return state.apply_gradients(grads=grads), {"loss": loss}


def build(model_name: str, num_classes: int, dtype, image_shape: tuple[int, int, int],
          mesh: jax.sharding.Mesh, grad_accum_steps: int = 1, learning_rate: float = 0.1,
          weight_decay: float = 1e-4):
  """(create: rng -> state, jitted train step, abstract state) for `model_name` on `mesh`.

  Parameters and momentum are laid out by the same rule table as ours (`sharding`), the batch
  is split the same way, and the state is donated.
  """
  depth, width = models.parse_name(model_name)
  model = PlainResNetV2(models.blocks_for(depth), width, num_classes, dtype)
  optimizer = optax.chain(
      optax.add_decayed_weights(weight_decay, mask=lambda p: jax.tree.map(lambda w: w.ndim > 1, p)),
      optax.sgd(learning_rate, momentum=0.9))

  def create(rng):
    params = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)

  abstract = jax.eval_shape(create, jax.random.key(0))
  shardings = sharding.param_shardings(abstract, mesh)
  batch = sharding.batch_sharding(mesh)
  step = jax.jit(functools.partial(train_step, grad_accum_steps=grad_accum_steps),
                 in_shardings=(shardings, batch),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  return jax.jit(create, out_shardings=shardings), step, abstract, shardings
