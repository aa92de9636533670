"""big_transfer: Big Transfer (BiT) pre-training and transfer in JAX/Flax."""

__version__ = "0.1.0"
