"""Write a data set as an .npz (x_train, y_train, x_test, y_test) for machines without
tensorflow-datasets, such as a bare GPU machine (benchmarks/gpu.sh):

    python benchmarks/make_npz.py fashion_mnist data/fashion_mnist.npz

Any name `aevae_jax.data.sources.load_dataset` knows works; `--dataset` of every command and
benchmark reads the file back, without pickle."""

from __future__ import annotations

import os
import sys

import numpy as np

from aevae_jax.data.sources import load_dataset


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python benchmarks/make_npz.py DATASET OUT.npz")
    name, path = argv
    ds = load_dataset(name)
    arrays = dict(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    arrays = {k: v for k, v in arrays.items() if v is not None}  # unlabelled sets have no y
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **arrays)
    print(f"wrote {path}: " + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
