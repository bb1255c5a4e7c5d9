"""The domain classifier whose features define the Frechet distance of samples.

Without Inception weights (offline), sample quality is measured in the features of a
small CNN trained on the same data set ("domain FD", like the Frechet LeNet distance
for MNIST). It is trained once per data set on grey-level images and cached as an
orbax checkpoint under $AEVAE_CACHE (default ~/.cache/aevae_jax), keyed by a
fingerprint of the training images, with its test accuracy beside it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from aevae_jax.data.decoded import cache_root
from aevae_jax.data.preprocess import to_unit_interval
from aevae_jax.data.spec import Dataset
from aevae_jax.evaluate.split import SplitMap, map_examples
from aevae_jax.nn.conv import Conv
from aevae_jax.progress import progress_bar
from aevae_jax.writing import write_json

VERSION = 2  # bump when the network or its training changes, to retrain caches
EPOCHS = 3
BATCH = 128
SEGMENT = 52  # steps per compiled segment: 468 steps per Fashion-MNIST epoch = 9 segments


class FeatureNet(nn.Module):
    """Two stride-2 convolutions (16 and 32 channels), a 128-unit feature layer, and
    class logits. The convolutions are `aevae_jax.nn.conv.Conv`: flax.linen.Conv's function
    and parameters (so caches trained with either load), as im2col matmuls on CPU, where
    XLA's own convolutions inside the training scan are several times slower."""

    num_classes: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(Conv(16)(x))
        h = nn.relu(Conv(32)(h))
        features = nn.relu(nn.Dense(128)(h.reshape(h.shape[0], -1)))
        return nn.Dense(self.num_classes)(features), features


class Classifier(NamedTuple):
    params: dict
    net: FeatureNet
    test_accuracy: float

    def features(self, images: jax.Array, progress: bool = False) -> np.ndarray:
        """Penultimate features [N, 128] of images [N, H, W, C] in [0, 1] (or uint8)."""
        return self.features_and_predictions(images, progress)[0]

    def features_and_predictions(self, images: jax.Array, progress: bool = False):
        """(features [N, 128], predicted classes [N]) of images, in one pass."""
        logits, features = _apply_split(self.net.num_classes)(
            self.params, (jnp.asarray(images),), desc="classifier features", progress=progress
        )
        return np.asarray(features), np.argmax(np.asarray(logits), axis=1)


@functools.cache
def _apply_split(num_classes: int) -> SplitMap:
    """(logits, features) of every image, compiled once per network."""
    net = FeatureNet(num_classes)

    def one(params, x, i):
        logits, features = net.apply({"params": params}, to_unit_interval(x)[None])
        return logits[0], features[0]

    return SplitMap(one, chunk=500, block=2000)


def fingerprint(ds: Dataset) -> str:
    h = hashlib.sha1()
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    return f"{ds.name}-v{VERSION}-{h.hexdigest()[:12]}"


def train_classifier(
    ds: Dataset, key: jax.Array, epochs: int = EPOCHS, progress: bool = False
) -> Classifier:
    """Train FeatureNet on the full training split with Adam: each epoch a fresh
    permutation, run as compiled `lax.scan` segments of SEGMENT steps (so a progress
    bar moves every few seconds)."""
    net = FeatureNet(ds.num_classes)
    x_train, y_train = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    k_init, k_data = jax.random.split(key)
    params = net.init(k_init, jnp.zeros((1, *ds.image_shape)))["params"]
    tx = optax.adam(1e-3)
    steps = len(x_train) // BATCH

    def loss_fn(p, x, y):
        logits, _ = net.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def segment(carry, order):  # a run of steps over batches of indices [S, BATCH]
        def step(c, idx):
            p, s = c
            g = jax.grad(loss_fn)(p, to_unit_interval(x_train[idx]), y_train[idx])
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, carry, order)[0]

    carry = (params, tx.init(params))
    bar = progress_bar(
        total=epochs * steps, desc="domain classifier", unit="step", enabled=progress
    )
    for e in range(epochs):
        order = jax.random.permutation(jax.random.fold_in(k_data, e), len(x_train))
        order = order[: steps * BATCH].reshape(steps, BATCH)
        for start in range(0, steps, SEGMENT):
            carry = segment(carry, order[start : start + SEGMENT])
            bar.update(min(SEGMENT, steps - start))
    bar.close()
    params = carry[0]
    return Classifier(params, net, _accuracy(net, params, ds))


def _accuracy(net, params, ds: Dataset) -> float:
    logits = map_examples(
        lambda xi, i: net.apply({"params": params}, to_unit_interval(xi)[None])[0][0],
        (jnp.asarray(ds.x_test),),
    )
    return float(np.mean(np.argmax(np.asarray(logits), axis=1) == ds.y_test))


SEED = 0  # a measuring instrument: one fixed classifier per data set, whatever the run's seed


def load_or_train_classifier(ds: Dataset, progress: bool = False) -> Classifier | None:
    """The cached classifier of `ds`, trained (with the fixed SEED) and cached on first
    use; None when the data set has no labels (no domain FD then)."""
    if ds.y_train is None or ds.y_test is None:
        return None
    directory = os.path.join(cache_root(), "classifiers", fingerprint(ds))
    net = FeatureNet(ds.num_classes)
    meta_path = os.path.join(directory, "meta.json")
    checkpointer = ocp.StandardCheckpointer()
    if os.path.exists(meta_path):
        abstract = net.init(jax.random.key(0), jnp.zeros((1, *ds.image_shape)))["params"]
        params = checkpointer.restore(os.path.join(directory, "params"), abstract)
        with open(meta_path) as f:
            return Classifier(params, net, json.load(f)["test_accuracy"])
    clf = train_classifier(ds, jax.random.key(SEED), progress=progress)
    os.makedirs(directory, exist_ok=True)
    checkpointer.save(os.path.join(directory, "params"), clf.params, force=True)
    checkpointer.wait_until_finished()
    meta = {"test_accuracy": clf.test_accuracy, "epochs": EPOCHS, "version": VERSION}
    write_json(meta_path, meta, indent=None)  # meta.json last: it marks a complete cache
    return clf
