"""Data: whole splits as arrays, and the preprocessing applied inside compiled steps.

`load_dataset` returns a `Dataset` of NumPy arrays (images uint8 [N, H, W, C], or
float32 in [0, 1] for a user's .npz of floats; labels int32 [N]). Sources:
- tfds names (`TFDS_NAMES`). Fashion-MNIST is prepared offline from Debian's IDX
  files when tfds' own copy is not prepared (see fashion_mnist_idx.py).
- `sklearn_photos`: real colour images that work offline, 32 x 32 patches of the two
  photographs in scikit-learn's wheel (`load_sklearn_photos`);
- a path to an `.npz` with `x_train`, `x_test` and optional `y_train`, `y_test`
  (other members ignored), read without pickle and validated.
A data set that is neither prepared nor obtainable fails within seconds with a
`UserError` naming the remedy, instead of minutes of network retries.

Validation (`load_npz`, and `validate_dataset` for a `Dataset` built in Python, with the
same messages): images [N, H, W] or [N, H, W, C] (any C >= 1; the models and figures take
any channel count), N, H, W, C >= 1, the same image shape in both splits; uint8, bool
(-> 0/255), other integers within 0..255 (-> uint8; only-0-and-1 integers are refused as
a likely mistake), or floats in [0, 1] without NaN / infinity (-> float32). Labels for
both splits or neither, one per image, integers (or bool, or whole-number floats)
0..K-1 with K <= MAX_CLASSES (-> int32).

`describe_dataset` tells a data set's `DataShape` (image shape, classes, split sizes)
without loading its images, so that a run's configuration can be checked first.

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
import zlib

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
        require_train_size(n, len(self.x_train), self.name)
        y = None if self.y_train is None else self.y_train[:n]
        return dataclasses.replace(self, x_train=self.x_train[:n], y_train=y)


def require_train_size(n: int, available: int, name: str) -> None:
    """UserError unless a training subset of `n` examples fits a split of `available`."""
    require(
        n <= available,
        f"train_size {n} is larger than the training split of {name} ({available} "
        f"examples); use --train-size {available} or less",
    )


# ----------------------------------------------------------------------------- loading


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load a whole data set: a tfds name from TFDS_NAMES, `sklearn_photos`, or a path to
    an .npz file."""
    source = _source(name)
    if source == "npz":
        return load_npz(name)
    if source == "photos":
        return load_sklearn_photos()
    return _load_tfds(name, data_dir)


def _source(name: str) -> str:
    """Which loader serves `name`: 'npz', 'photos' or 'tfds'; else the UserError that
    load_dataset and describe_dataset both raise."""
    require(
        isinstance(name, str) and name != "",
        f"dataset must be a data set name or a path to an .npz file; got {name!r}",
    )
    if name.lower().endswith(".npz"):
        return "npz"
    if name == PHOTOS_NAME:
        return "photos"
    if name in TFDS_NAMES:
        return "tfds"
    require(
        not os.path.isdir(name),
        f"dataset {name!r} is a directory; pass the path of an .npz file "
        "(written with np.savez(path, x_train=..., x_test=...))",
    )
    require(
        not os.path.exists(name),
        f"dataset {name!r} is not an .npz file; save the arrays with "
        "np.savez('data.npz', x_train=..., x_test=...) and pass that path",
    )
    raise UserError(
        f"unknown dataset {name!r}; use one of {', '.join((*TFDS_NAMES, PHOTOS_NAME))} "
        "or a path to an .npz file with x_train and x_test"
    )


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
        from aevae_jax.data import fashion_mnist_idx

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


# The most classes a labelled data set may have. Conditional models one-hot their labels
# and the linear probe keeps a [latent, K] weight, so a stray label (a 60000 in place of 6)
# would silently allocate a huge table; 1000 is ImageNet's count, far above any data set
# this code is meant for.
MAX_CLASSES = 1000

_NPZ_KEYS = ("x_train", "x_test", "y_train", "y_test")
_NPZ_HOWTO = "np.savez(path, x_train=..., x_test=..., y_train=..., y_test=...)"


def load_npz(path: str) -> Dataset:
    """A user's data set from an .npz (no pickle): x_* images, optional y_* labels; other
    members are ignored. Every array header is checked (`_check_headers`, the checks that
    `describe_dataset` makes) before any data is read, then the values (`_check_values`,
    the checks of `validate_dataset`)."""
    with _open_npz(path) as zf:
        members = _npz_members(zf, path)
        _check_headers({k: _npz_header(zf, path, k, m) for k, m in members.items()})
        arrays = {k: _npz_array(zf, path, k, m) for k, m in members.items()}
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, *_check_values(arrays))


def validate_dataset(ds: Dataset) -> Dataset:
    """The checks of `load_npz`, with the same messages, for a `Dataset` built in Python:
    images [N, H, W] or [N, H, W, C] (any C >= 1), N >= 1, uint8 / bool / integers in
    0..255 / floats in [0, 1] with no NaN or infinity, the same image shape in both
    splits; labels for both splits or neither, one per image, whole numbers 0..K-1 with
    K <= MAX_CLASSES; class_names (if given) one per class. Returns the normalised copy
    (images [N, H, W, C] uint8 or float32, labels int32); arrays already in that form
    are kept, not copied."""
    require(
        isinstance(ds, Dataset),
        f"expected an aevae_jax.data.dataset.Dataset; got {type(ds).__name__}. Build one with "
        "Dataset(name, x_train, x_test, y_train, y_test)",
    )
    require(
        isinstance(ds.name, str) and ds.name != "",
        f"Dataset name must be a non-empty string; got {ds.name!r}",
    )
    arrays = {k: _as_array(getattr(ds, k), k) for k in _NPZ_KEYS}
    _check_headers({k: None if v is None else (v.shape, v.dtype) for k, v in arrays.items()})
    x_train, x_test, y_train, y_test = _check_values(arrays)
    names = ds.class_names
    if names is not None:
        require(
            isinstance(names, tuple | list) and all(isinstance(n, str) for n in names),
            f"class_names must be a sequence of strings (one per class); got {names!r}",
        )
        names = tuple(names)
        require(
            0 < len(names) <= MAX_CLASSES,
            f"class_names has {len(names)} names; give one per class, 1 to {MAX_CLASSES}",
        )
        if y_train is not None:
            top = max(int(y_train.max()), int(y_test.max()))
            require(
                top < len(names),
                f"class_names has {len(names)} names but the labels go up to {top}; "
                "give one name per class 0..K-1",
            )
    return dataclasses.replace(
        ds, x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test, class_names=names
    )


def _as_array(v, what: str) -> np.ndarray | None:
    if v is None:
        require(
            what.startswith("y"),
            f"{what} is missing; a Dataset needs image arrays x_train and x_test",
        )
        return None
    try:
        return np.asarray(v)
    except ValueError as e:  # ragged nested lists
        raise UserError(f"{what} is not a rectangular array ({e}); stack it first") from None


def _check_headers(headers: dict) -> tuple[tuple[int, ...], int, int]:
    """The checks that need only shapes and dtypes (`headers`: key -> (shape, dtype), or
    None for an absent member). Returns (image shape [H, W, C], n_train, n_test)."""
    missing = [k for k in ("x_train", "x_test") if headers.get(k) is None]
    require(
        not missing,
        f"the data lacks {', '.join(missing)}; save it with {_NPZ_HOWTO} (labels optional)",
    )
    shapes = {k: _check_image_header(*headers[k], k) for k in ("x_train", "x_test")}
    require(
        shapes["x_train"][1:] == shapes["x_test"][1:],
        f"x_train images are {shapes['x_train'][1:]} but x_test images are "
        f"{shapes['x_test'][1:]}; both splits need the same image shape",
    )
    n = {"y_train": shapes["x_train"][0], "y_test": shapes["x_test"][0]}
    for k in ("y_train", "y_test"):
        if headers.get(k) is not None:
            _check_label_header(*headers[k], n[k], k)
    require(
        (headers.get("y_train") is None) == (headers.get("y_test") is None),
        "give labels for both splits (y_train and y_test) or for neither",
    )
    return shapes["x_train"][1:], n["y_train"], n["y_test"]


def _check_image_header(shape: tuple[int, ...], dtype: np.dtype, what: str) -> tuple[int, ...]:
    """Shape and dtype of images -> their shape as [N, H, W, C]."""
    shape = tuple(int(v) for v in shape)
    require(
        len(shape) in (3, 4),
        f"{what} must be images [N, H, W] or [N, H, W, C]; got shape {shape}. "
        "Reshape flat vectors to [N, H, W] first",
    )
    require(shape[0] > 0, f"{what} is empty (shape {shape}); each split needs at least one image")
    if len(shape) == 3:
        shape = (*shape, 1)
    require(
        min(shape[1:]) > 0,
        f"{what} has an empty image dimension (shape {shape}); H, W and C must be at least 1",
    )
    require(
        dtype.kind in "biuf",
        f"{what} has dtype {dtype}; store images as uint8 (0-255) or floats in [0, 1]",
    )
    return shape


def _check_label_header(shape: tuple[int, ...], dtype: np.dtype, n: int, what: str) -> None:
    require(
        tuple(shape) == (n,),
        f"{what} must be a vector of {n} labels (one per image); got shape {tuple(shape)}",
    )
    require(
        dtype.kind in "biuf",
        f"{what} has dtype {dtype}; store class labels as integers 0..K-1 "
        "(np.unique(labels, return_inverse=True) numbers named classes)",
    )


def _check_values(arrays: dict) -> tuple:
    """The checks that read the values, after `_check_headers`: the normalised
    (x_train, x_test, y_train, y_test)."""
    x = [validate_images(arrays[k], k) for k in ("x_train", "x_test")]
    y_train = validate_labels(arrays.get("y_train"), len(x[0]), "y_train")
    y_test = validate_labels(arrays.get("y_test"), len(x[1]), "y_test")
    return (*x, y_train, y_test)


def validate_images(x: np.ndarray, what: str) -> np.ndarray:
    """Images [N, H, W] or [N, H, W, C] -> [N, H, W, C] uint8 (0-255) or float32 in [0, 1].

    Accepted: uint8; bool (to 0/255); other integer dtypes with values in 0..255 (to
    uint8); floats in [0, 1] without NaN or infinity (to float32). Refused: integer images
    whose only values are 0 and 1 (as intensities out of 255 they would be black)."""
    x = np.asarray(x)
    _check_image_header(x.shape, x.dtype, what)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * np.uint8(255)
    if x.dtype.kind in "iu":
        lo, hi = int(x.min()), int(x.max())
        require(
            lo >= 0 and hi <= 255,
            f"{what} has integer values in [{lo}, {hi}] (dtype {x.dtype}) but integer "
            "images must lie in 0..255; store them as uint8 0-255 or as floats in [0, 1]",
        )
        require(
            hi != 1,
            f"{what} holds only the integers 0 and 1, which as intensities out of 255 are "
            "black; store binary images as bool or floats 0.0/1.0 (or multiply by 255)",
        )
        return x.astype(np.uint8, copy=False)
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
    return x.astype(np.float32, copy=False)


def validate_labels(y: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    """Class labels [n] -> int32 0..K-1 (K <= MAX_CLASSES), or None for no labels.

    Accepted: integer dtypes; bool (False 0, True 1); floats holding whole numbers (as
    pandas writes integer columns with gaps). Refused: NaN or infinity, fractions,
    negative labels, labels of MAX_CLASSES or more."""
    if y is None:
        return None
    y = np.asarray(y)
    _check_label_header(y.shape, y.dtype, n, what)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise UserError(
                f"{what} has {int(bad.sum())} NaN or infinite labels (first at index "
                f"{int(np.argmax(bad))}); every image needs a class label 0..K-1 "
                "(or leave out both y_train and y_test)"
            )
        frac = y != np.floor(y)
        if frac.any():
            i = int(np.argmax(frac))
            raise UserError(
                f"{what} holds non-integer labels ({y[i]:g} at index {i}); class labels "
                "must be whole numbers 0..K-1"
            )
    if y.dtype == np.bool_:
        y = y.astype(np.int32)
    lo, hi = y.min(), y.max()
    require(
        lo >= 0,
        f"{what} has negative labels (smallest {lo:g}); class labels must be 0..K-1",
    )
    require(
        hi < MAX_CLASSES,
        f"{what} has label {hi:g} but at most {MAX_CLASSES} classes are supported "
        f"(labels 0..{MAX_CLASSES - 1}); number the classes 0..K-1, e.g. with "
        "np.unique(labels, return_inverse=True)",
    )
    return y.astype(np.int32, copy=False)


# ----------------------------------------------------------------- .npz without loading


def _open_npz(path: str) -> zipfile.ZipFile:
    require(
        not os.path.isdir(path),
        f"{path} is a directory, not an .npz file; pass the path of the .npz file",
    )
    require(os.path.isfile(path), f"no such data file: {path}")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UserError(
            f"{path} is not a readable .npz file (not a zip archive); write it with np.savez"
        ) from None
    except OSError as e:
        raise UserError(
            f"{path} cannot be read ({e.strerror or e}); check the file's permissions"
        ) from None


def _npz_members(zf: zipfile.ZipFile, path: str) -> dict[str, str]:
    """The zip member of each of x_train, x_test, y_train, y_test that is present (as
    np.load names them: 'x_train.npy' is x_train). Other members are ignored."""
    names = set(zf.namelist())
    members = {}
    for k in _NPZ_KEYS:
        for m in (f"{k}.npy", k):
            if m in names:
                members[k] = m
                break
    missing = [k for k in ("x_train", "x_test") if k not in members]
    if missing:
        have = sorted(m[:-4] if m.endswith(".npy") else m for m in names)
        raise UserError(
            f"{path} lacks {', '.join(missing)}; it has {', '.join(have) or 'nothing'}. "
            f"Save it with {_NPZ_HOWTO} (labels optional)"
        )
    return members


_READ_ERRORS = (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error)


def _npz_header(zf: zipfile.ZipFile, path: str, key: str, member: str):
    """(shape, dtype) of one member from its .npy header alone."""
    try:
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:  # 2.0, and 3.0 (the same layout, utf-8 text)
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except _READ_ERRORS as e:
        raise UserError(
            f"{path}: member {key!r} is not a readable NumPy array ({e}); write the file "
            "with np.savez"
        ) from None
    require(
        not dtype.hasobject,
        f"{path}: {key} holds Python objects (dtype {dtype}), which cannot be read without "
        f"pickle; save plain numeric arrays with {_NPZ_HOWTO}",
    )
    return shape, dtype


def _npz_array(zf: zipfile.ZipFile, path: str, key: str, member: str) -> np.ndarray:
    try:
        with zf.open(member) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except _READ_ERRORS as e:
        raise UserError(
            f"{path}: member {key!r} is not a readable NumPy array ({e}); write the file "
            "with np.savez"
        ) from None


@dataclasses.dataclass(frozen=True)
class DataShape:
    """What a data set holds, known without loading its images (`describe_dataset`), or
    read off loaded arrays (`describe_arrays`)."""

    name: str
    image_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int | None  # None: unlabelled
    n_train: int
    n_test: int
    class_names: tuple[str, ...] | None = None

    @property
    def spec(self) -> DataSpec:
        """The model factory's description, as `Dataset.spec` gives it once loaded."""
        return DataSpec(self.name, self.image_shape, self.num_classes, self.class_names)


def describe_arrays(ds: Dataset) -> DataShape:
    """The `DataShape` of a loaded data set (classes counted as `Dataset.spec` counts them)."""
    spec = ds.spec
    return DataShape(
        spec.name,
        spec.image_shape,
        spec.num_classes,
        len(ds.x_train),
        len(ds.x_test),
        spec.class_names,
    )


_DIGITS = tuple(str(i) for i in range(10))
_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt")
_FASHION_NAMES += ("Sneaker", "Bag", "Ankle boot")
# Facts of the built-in data sets, as load_dataset returns them (tfds' "train" and "test"
# splits; binarized_mnist's 10,000 validation images are not loaded). Class names are
# tfds' (cifar10's are set from the archive's batches.meta.txt when it is prepared).
KNOWN_SHAPES = {
    s.name: s
    for s in (
        DataShape(
            "fashion_mnist",
            (28, 28, 1),
            10,
            60_000,
            10_000,
            _FASHION_NAMES,
        ),
        DataShape("mnist", (28, 28, 1), 10, 60_000, 10_000, _DIGITS),
        DataShape(
            "kmnist",
            (28, 28, 1),
            10,
            60_000,
            10_000,
            ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        ),
        DataShape("binarized_mnist", (28, 28, 1), None, 50_000, 10_000),
        DataShape(
            "cifar10",
            (32, 32, 3),
            10,
            50_000,
            10_000,
            tuple("airplane automobile bird cat deer dog frog horse ship truck".split()),
        ),
        DataShape(PHOTOS_NAME, (PHOTO_PATCH, PHOTO_PATCH, 3), 2, 1_550, 350, ("china", "flower")),
    )
}


def describe_dataset(name: str, data_dir: str | None = None) -> DataShape:
    """The shape of data set `name` (as for `load_dataset`) without loading its images, in
    milliseconds: from a table for the built-in names (whether they are prepared is left
    to load_dataset), from the array headers of an .npz. An .npz gets the checks that need
    no image values, with load_npz's messages (members, shapes, image dtypes, label
    length, dtype and values); NaN and range checks of the images are left to the load.
    `data_dir` is accepted for symmetry with load_dataset; the facts do not depend on it."""
    if _source(name) != "npz":
        return KNOWN_SHAPES[name]
    with _open_npz(name) as zf:
        members = _npz_members(zf, name)
        headers = {k: _npz_header(zf, name, k, m) for k, m in members.items()}
        image_shape, n_train, n_test = _check_headers(headers)
        num_classes = None
        if "y_train" in members:
            n = {"y_train": n_train, "y_test": n_test}
            top = max(
                int(validate_labels(_npz_array(zf, name, k, members[k]), n[k], k).max())
                for k in ("y_train", "y_test")
            )
            num_classes = top + 1
    stem = os.path.splitext(os.path.basename(name))[0]  # the name load_npz gives
    return DataShape(stem, image_shape, num_classes, n_train, n_test)


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
