"""Shared fixtures: the real Fashion-MNIST (offline, prepared once per machine) and
small real subsets saved as .npz for fast end-to-end runs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from aevae_jax.data import load_dataset


@pytest.fixture(scope="session")
def fashion_mnist():
    return load_dataset("fashion_mnist")


@pytest.fixture(scope="session")
def small_npz(fashion_mnist, tmp_path_factory):
    """2048 train / 512 test real Fashion-MNIST images as an .npz (uint8, labels)."""
    path = tmp_path_factory.mktemp("data") / "fmnist_small.npz"
    np.savez(
        path,
        x_train=fashion_mnist.x_train[:2048],
        y_train=fashion_mnist.y_train[:2048],
        x_test=fashion_mnist.x_test[:512],
        y_test=fashion_mnist.y_test[:512],
    )
    return str(path)
