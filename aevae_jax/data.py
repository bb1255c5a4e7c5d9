"""Data: whole splits as arrays, and the preprocessing applied inside compiled steps.

`load_dataset` returns a `Dataset` of NumPy arrays (images uint8 [N, H, W, C], or
float32 in [0, 1] for a user's .npz of floats; labels int32 [N]). Sources:
- tfds names (`TFDS_NAMES`). Fashion-MNIST is prepared offline from Debian's IDX
  files when tfds' own copy is not prepared (see fashion_mnist_idx.py).
- `sklearn_photos`: real colour images that work offline, 32 x 32 patches of the two
  photographs in scikit-learn's wheel (`load_sklearn_photos`);
- a path to an `.npz` with `x_train`, `x_test` and optional `y_train`, `y_test`,
  read without pickle and validated (shape, dtype, NaN, range [0, 1]).
A data set that is neither prepared nor obtainable fails within seconds with a
`UserError` naming the remedy, instead of minutes of network retries.

`preprocess` turns a stored batch into model input inside jit: scale to [0, 1] and
binarize (dynamic: a fresh keyed Bernoulli draw per step; static: one fixed draw
per example index; none).
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.errors import UserError, require

TFDS_NAMES = ("fashion_mnist", "mnist", "binarized_mnist", "kmnist", "cifar10")
# Real colour images that work offline: 32 x 32 patches of the two photographs that
# scikit-learn ships (see load_sklearn_photos).
PHOTOS_NAME = "sklearn_photos"
# The statically binarized copy is one fixed draw, the same for every run and seed.
_STATIC_BINARIZATION_SEED = 20_140_101


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model factory is told about its data: no arrays, just the description.
    A run saves it in config.json, so a model can be rebuilt without loading data."""

    name: str
    image_shape: tuple[int, ...]  # [H, W, C]
    num_classes: int | None = None  # None: unlabelled
    class_names: tuple[str, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # [N, H, W, C] uint8, or float32 in [0, 1]
    x_test: np.ndarray
    y_train: np.ndarray | None = None  # [N] int32
    y_test: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        if self.y_train is None:
            return None
        return int(max(self.y_train.max(), -1 if self.y_test is None else self.y_test.max())) + 1

    @property
    def spec(self) -> DataSpec:
        labelled = self.y_train is not None
        return DataSpec(
            self.name,
            self.image_shape,
            self.num_classes if labelled else None,
            self.class_names if labelled else None,
        )

    def take_train(self, n: int | None) -> Dataset:
        """The first n training examples (all when n is None); n beyond the split is an error."""
        if n is None:
            return self
        require(
            n <= len(self.x_train),
            f"train_size {n} is larger than the training split of {self.name} "
            f"({len(self.x_train)} examples); use --train-size {len(self.x_train)} or less",
        )
        y = None if self.y_train is None else self.y_train[:n]
        return dataclasses.replace(self, x_train=self.x_train[:n], y_train=y)


# ----------------------------------------------------------------------------- loading


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load a whole data set: a tfds name from TFDS_NAMES, `sklearn_photos`, or a path to
    an .npz file."""
    if name.endswith(".npz"):
        return load_npz(name)
    if name == PHOTOS_NAME:
        return load_sklearn_photos()
    if name not in TFDS_NAMES:
        raise UserError(
            f"unknown dataset {name!r}; use one of {', '.join((*TFDS_NAMES, PHOTOS_NAME))} "
            "or a path to an .npz file with x_train and x_test"
        )
    return _load_tfds(name, data_dir)


def network_available(timeout: float = 3.0) -> bool:
    """Can tfds reach its download hosts? False at once when AEVAE_OFFLINE=1."""
    if os.environ.get("AEVAE_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _tfds():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow only reads files here; its oneDNN kernels (and their start-up notice)
    # are of no use to us.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds' notes on missing variant folders

    # TensorFlow must not take the accelerator memory that JAX needs.
    tf.config.set_visible_devices([], "GPU")
    return tfds


def _prepared_builder(name: str, data_dir: str | None):
    """A prepared tfds builder for `name`, preparing it if that can be done; else UserError."""
    tfds = _tfds()
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if name == "fashion_mnist":
        from aevae_jax import fashion_mnist_idx

        offline = fashion_mnist_idx.FashionMnistIdx(data_dir=data_dir)
        if offline.is_prepared():
            return offline
        if fashion_mnist_idx.idx_files_present():
            config = tfds.download.DownloadConfig(manual_dir=fashion_mnist_idx.idx_dir())
            offline.download_and_prepare(download_config=config)
            return offline
    if network_available():
        builder.download_and_prepare()
        return builder
    remedy = (
        "install Debian's package with `sudo apt-get install dataset-fashion-mnist` "
        "(or set AEVAE_FASHION_MNIST_DIR to a folder with the four IDX .gz files), or "
        if name == "fashion_mnist"
        else ""
    )
    where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    raise UserError(
        f"dataset {name!r} is not prepared in {where} and "
        f"cannot be downloaded (no network). Remedy: {remedy}run `tfds build {name}` on a "
        "machine with network and copy its ~/tensorflow_datasets folder here (or pass "
        "--data-dir), or pass your own data as an .npz file."
    )


def _load_tfds(name: str, data_dir: str | None) -> Dataset:
    tfds = _tfds()
    builder = _prepared_builder(name, data_dir)
    splits = {}
    for split in ("train", "test"):
        # Large batches concatenated (not batch_size=-1, which tfds' mock data cannot serve).
        parts = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=1 << 16)))
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        images = arrays["image"]
        if name == "binarized_mnist" and images.max() <= 1:
            images = images * np.uint8(255)  # stored as {0, 1}: to 0/255, losslessly
        labels = arrays.get("label")
        splits[split] = (images, None if labels is None else np.asarray(labels, np.int32))
    features = builder.info.features
    label_feature = features["label"] if "label" in features.keys() else None
    class_names = tuple(label_feature.names) if label_feature is not None else None
    return Dataset(
        name=name,
        x_train=splits["train"][0],
        x_test=splits["test"][0],
        y_train=splits["train"][1],
        y_test=splits["test"][1],
        class_names=class_names,
    )


PHOTO_PATCH, PHOTO_STRIDE, PHOTO_TEST_COLUMNS = 32, 16, 128


def photo_patches(image: np.ndarray, x_from: int, x_to: int) -> np.ndarray:
    """Every 32 x 32 patch of `image` [H, W, 3] on a 16-pixel grid that lies wholly in
    the columns [x_from, x_to): [N, 32, 32, 3], row-major."""
    p, s = PHOTO_PATCH, PHOTO_STRIDE
    return np.stack(
        [
            image[top : top + p, left : left + p]
            for top in range(0, image.shape[0] - p + 1, s)
            for left in range(x_from, x_to - p + 1, s)
        ]
    )


def load_sklearn_photos() -> Dataset:
    """32 x 32 colour patches of the two photographs in scikit-learn's wheel
    (`sklearn.datasets.load_sample_images`: china.jpg and flower.jpg, 427 x 640 RGB).

    Patches lie on a 16-pixel grid (neighbours overlap by half). The rightmost 128
    columns of each photograph give the test split, the columns left of them the
    training split, so no test pixel appears in a training patch: 1,550 training and
    350 test patches, uint8 [32, 32, 3], labelled by photograph (0 china, 1 flower).
    """
    try:
        from sklearn.datasets import load_sample_images

        photos = load_sample_images()  # reads the JPEGs with Pillow
    except ImportError as e:
        raise UserError(
            f"the {PHOTOS_NAME} data set needs scikit-learn and Pillow ({e}): "
            "pip install scikit-learn pillow"
        ) from None
    splits = {"train": ([], []), "test": ([], [])}
    for label, image in enumerate(photos.images):
        cut = image.shape[1] - PHOTO_TEST_COLUMNS
        for split, (lo, hi) in (("train", (0, cut)), ("test", (cut, image.shape[1]))):
            patches = photo_patches(np.asarray(image, np.uint8), lo, hi)
            splits[split][0].append(patches)
            splits[split][1].append(np.full(len(patches), label, np.int32))
    x_train, y_train = (np.concatenate(a) for a in splits["train"])
    x_test, y_test = (np.concatenate(a) for a in splits["test"])
    names = tuple(os.path.splitext(os.path.basename(f))[0] for f in photos.filenames)
    return Dataset(PHOTOS_NAME, x_train, x_test, y_train, y_test, class_names=names)


def load_npz(path: str) -> Dataset:
    """A user's data set from an .npz (no pickle): x_* images, optional y_* labels."""
    require(os.path.isfile(path), f"no such data file: {path}")
    with open(path, "rb") as f:
        require(
            f.read(4) == b"PK\x03\x04",
            f"{path} is not a readable .npz file (not a zip archive); write it with np.savez",
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:  # object arrays need pickle, which we refuse
        raise UserError(
            f"{path} cannot be read without pickle ({e}); save plain numeric arrays with "
            "np.savez(path, x_train=..., x_test=..., y_train=..., y_test=...)"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a readable .npz file: {e}") from None
    for k, v in arrays.items():
        require(
            isinstance(v, np.ndarray),
            f"{path}: member {k!r} is not a NumPy array; write the file with np.savez",
        )
    missing = [k for k in ("x_train", "x_test") if k not in arrays]
    require(
        not missing,
        f"{path} lacks {', '.join(missing)}; it has {', '.join(sorted(arrays)) or 'nothing'}. "
        "Save it with np.savez(path, x_train=..., x_test=...) (labels y_train, y_test optional)",
    )
    x_train = validate_images(arrays["x_train"], "x_train")
    x_test = validate_images(arrays["x_test"], "x_test")
    require(
        x_train.shape[1:] == x_test.shape[1:],
        f"x_train images are {x_train.shape[1:]} but x_test images are {x_test.shape[1:]}; "
        "both splits need the same image shape",
    )
    y_train = validate_labels(arrays.get("y_train"), len(x_train), "y_train")
    y_test = validate_labels(arrays.get("y_test"), len(x_test), "y_test")
    require(
        (y_train is None) == (y_test is None),
        "give labels for both splits (y_train and y_test) or for neither",
    )
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, x_train, x_test, y_train, y_test)


def validate_images(x: np.ndarray, what: str) -> np.ndarray:
    """Images [N, H, W] or [N, H, W, C], uint8 (0-255) or float in [0, 1] -> [N, H, W, C]."""
    require(
        x.ndim in (3, 4) and x.shape[0] > 0,
        f"{what} must be images [N, H, W] or [N, H, W, C] with N > 0; got shape {x.shape}. "
        "Reshape flat vectors to [N, H, W] first",
    )
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * np.uint8(255)
    require(
        np.issubdtype(x.dtype, np.floating),
        f"{what} has dtype {x.dtype}; store images as uint8 (0-255) or floats in [0, 1]",
    )
    bad = ~np.isfinite(x)
    if bad.any():
        raise UserError(
            f"{what} has {int(bad.sum())} NaN or infinite values (first at index "
            f"{np.argwhere(bad)[0].tolist()}); remove or impute them before training"
        )
    lo, hi = float(x.min()), float(x.max())
    require(
        lo >= 0.0 and hi <= 1.0,
        f"{what} values lie in [{lo:g}, {hi:g}] but the likelihoods need [0, 1]; "
        "divide 0-255 images by 255 (or store them as uint8)",
    )
    return x.astype(np.float32)


def validate_labels(y: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if y is None:
        return None
    require(
        y.shape == (n,),
        f"{what} must be a vector of {n} labels (one per image); got shape {y.shape}",
    )
    require(
        np.issubdtype(y.dtype, np.integer) and (y >= 0).all(),
        f"{what} must hold non-negative integer class labels; got dtype {y.dtype}",
    )
    return y.astype(np.int32)


# ----------------------------------------------------------------------- preprocessing


def to_unit_interval(x: jax.Array) -> jax.Array:
    """Stored images -> float32 in [0, 1] (uint8 / 255; floats unchanged)."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def static_binarization_key(split: int) -> jax.Array:
    """The fixed key of the static draw for a split (0: train, 1: test)."""
    return jax.random.fold_in(jax.random.key(_STATIC_BINARIZATION_SEED), split)


# Dynamic binarization compares 16 random bits per pixel with a threshold: two pixels per
# 32-bit word of the key's generator, so a step hashes half as many counters as a float
# uniform per pixel (2.5x cheaper: 0.27 ms instead of 0.66 ms for a batch of 128 28x28
# images here). P(x = 1) is within 2^-17 of the intensity (the float draw it replaces:
# about 2^-23); no fixed number of random bits gives k / 255 exactly.
BINARIZE_BITS = 16


def bernoulli_threshold(x: jax.Array) -> jax.Array:
    """The number t of the 2^16 values of a 16-bit draw u for which the pixel is 1 (u < t):
    round(p * 2^16) for intensity p. On uint8 data p = k / 255 and t = round(k * 2^16 / 255),
    computed in integers, so P(x = 1) = t / 2^16 is within 2^-17 of k / 255 and exactly 0
    and 1 at k = 0 and 255."""
    scale = 2**BINARIZE_BITS
    if x.dtype == jnp.uint8:
        return (x.astype(jnp.uint32) * scale + 127) // 255
    return jnp.round(x.astype(jnp.float32) * scale).astype(jnp.uint32)  # validated in [0, 1]


def bernoulli_pixels(key: jax.Array, x: jax.Array) -> jax.Array:
    """x ~ Bernoulli(intensity) per pixel of a batch [B, ...] of stored images (uint8, or
    floats in [0, 1]), as float32 0/1, from 16 random bits per pixel (`bernoulli_threshold`).
    Example b's bits are the words of row b of one draw [B, ceil(D / 2)], so the draw does
    not depend on how the batch is laid out over devices."""
    batch, dims = x.shape[0], math.prod(x.shape[1:])
    words = jax.random.bits(key, (batch, (dims + 1) // 2), jnp.uint32)
    u = jnp.concatenate([words >> 16, words & 0xFFFF], axis=1)[:, :dims]
    return (u.reshape(x.shape) < bernoulli_threshold(x)).astype(jnp.float32)


def preprocess(
    x: jax.Array, mode: str, key: jax.Array, index: jax.Array | None = None, split: int = 0
) -> jax.Array:
    """Stored batch [B, H, W, C] -> model input float32 [B, H, W, C] (runs inside jit).

    mode 'dynamic': x ~ Bernoulli(pixel) with `key` (`bernoulli_pixels`); 'static': each
    example drawn with a key fixed by (split, example `index`), so it is the same every
    epoch and run; 'none': grey levels.
    """
    if mode == "dynamic":
        return bernoulli_pixels(key, x)
    p = to_unit_interval(x)
    if mode == "none":
        return p
    if mode == "static":
        base = static_binarization_key(split)
        draw = lambda i, pi: jax.random.bernoulli(jax.random.fold_in(base, i), pi)
        return jax.vmap(draw)(index, p).astype(jnp.float32)
    raise UserError(f"unknown binarize mode {mode!r}; choose dynamic, static or none")
