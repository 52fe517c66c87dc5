"""cmpl_jax: Cross-Model Pseudo-Labeling for semi-supervised action recognition in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="cmpl_jax",
    version="0.1.0",
    description="Cross-Model Pseudo-Labeling (Xu et al., CVPR 2022) for semi-supervised "
                "action recognition, in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["cmpl_jax", "cmpl_jax.*", "configs"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.6",
        "tensorflow-cpu>=2.16; platform_machine=='x86_64' or platform_machine=='AMD64'",
        "tensorflow>=2.16; platform_machine!='x86_64' and platform_machine!='AMD64'",
        "tensorflow-datasets>=4.9",
        "clu>=0.0.12",
        "ml_collections>=0.1.1",
        "tensorboard>=2.16",
        "av>=12.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "pillow>=10.0",
        "matplotlib>=3.8",   # the per-class figures of cmpl_jax/diagnostics.py
    ],
    extras_require={
        # Notebook tools: the test suite executes colab/*.ipynb in smoke mode.
        "notebooks": ["matplotlib>=3.8", "ipykernel>=6.29"],
        # Conversion as an Apache Beam job (--runner=...; cmpl_jax/data/beam_convert.py).
        "beam": ["apache-beam>=2.60"],
        # The suite also checks the Beam conversion against the process pool.
        "test": ["pytest>=8.0", "pytest-timeout>=2.3", "nbclient>=0.10", "nbformat>=5.10",
                 "ipykernel>=6.29", "matplotlib>=3.8", "apache-beam>=2.60"],
        "cuda12": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
        "torch": ["torch>=2.0"],
    },
)
