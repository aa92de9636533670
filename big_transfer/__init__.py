"""big_transfer: Big Transfer (BiT) pre-training and transfer in JAX/Flax."""
