"""An offline tfds builder for Fashion-MNIST from the original IDX files.

Debian's `dataset-fashion-mnist` installs the four IDX files, but re-compressed,
so tfds' own `fashion_mnist` builder rejects them as manual downloads (the archive
checksums differ although the images are the same). This builder is tfds'
`FashionMNIST` with only the file source changed: it inherits the features,
version and `_generate_examples` (same keys, same split names), so tfds writes
the same examples in the same shuffled order as its own `fashion_mnist`.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification.mnist import FashionMNIST

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_data": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_dir() -> str:
    """Where the IDX files are looked for: $AEVAE_FASHION_MNIST_DIR or Debian's path."""
    return os.environ.get("AEVAE_FASHION_MNIST_DIR", DEBIAN_DIR)


def idx_files_present(directory: str | None = None) -> bool:
    directory = directory or idx_dir()
    return all(os.path.isfile(os.path.join(directory, f)) for f in FILES.values())


class FashionMnistIdx(FashionMNIST):
    """tfds' Fashion-MNIST, prepared from local IDX files (manual_dir)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Install Debian's package `dataset-fashion-mnist` (files in "
        f"{DEBIAN_DIR}), or put the four original IDX .gz files in a folder and pass "
        "it as manual_dir."
    )

    def _split_generators(self, dl_manager):
        paths = {k: os.path.join(dl_manager.manual_dir, f) for k, f in FILES.items()}
        extracted = dl_manager.extract(paths)
        return [
            tfds.core.SplitGenerator(
                name=tfds.Split.TRAIN,
                gen_kwargs=dict(
                    num_examples=60_000,
                    data_path=extracted["train_data"],
                    label_path=extracted["train_labels"],
                ),
            ),
            tfds.core.SplitGenerator(
                name=tfds.Split.TEST,
                gen_kwargs=dict(
                    num_examples=10_000,
                    data_path=extracted["test_data"],
                    label_path=extracted["test_labels"],
                ),
            ),
        ]
