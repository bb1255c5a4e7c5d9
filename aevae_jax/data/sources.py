"""Data: whole splits as arrays, and the preprocessing applied inside compiled steps.

`load_dataset` returns a `Dataset` of NumPy arrays (images uint8 [N, H, W, C], or
float32 in [0, 1] for a user's .npz of floats; labels int32 [N]). Sources:
- tfds names (`TFDS_NAMES`). Fashion-MNIST is prepared offline from Debian's IDX
  files when tfds' own copy is not prepared (see fashion_mnist_idx.py). After the first
  load, the splits are read from a decoded copy beside tfds' folder (decoded.py).
- `sklearn_photos`: real colour images that work offline, 32 x 32 patches of the two
  photographs in scikit-learn's wheel (`load_sklearn_photos`);
- `sprites`: shapes drawn by the project with known factors (sprites.py), for the
  disentanglement metrics;
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
"""

from __future__ import annotations

import contextlib
import os
import socket

import numpy as np

from aevae_jax.data import decoded, sprites
from aevae_jax.data.npz import load_npz, npz_array, npz_header, npz_members, open_npz
from aevae_jax.data.spec import Dataset, DataShape
from aevae_jax.data.validate import check_headers, validate_labels
from aevae_jax.errors import UserError, require

TFDS_NAMES = ("fashion_mnist", "mnist", "binarized_mnist", "kmnist", "cifar10")


# Real colour images that work offline: 32 x 32 patches of the two photographs that
# scikit-learn ships (see load_sklearn_photos).
PHOTOS_NAME = "sklearn_photos"
DRAWN_OR_TFDS = (*TFDS_NAMES, PHOTOS_NAME, sprites.NAME)


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load a whole data set: a tfds name from TFDS_NAMES, `sklearn_photos`, or a path to
    an .npz file."""
    source = _source(name)
    if source == "npz":
        return load_npz(name)
    if source == "photos":
        return load_sklearn_photos()
    if source == "sprites":
        return sprites.load_sprites()
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
    if name == sprites.NAME:
        return "sprites"
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
        f"unknown dataset {name!r}; use one of {', '.join(DRAWN_OR_TFDS)} "
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
    """A prepared tfds builder for `name`, preparing it if that can be done; else UserError.
    One process at a time prepares (two pytest workers or two runs on a fresh machine
    would otherwise both write tfds' folder, and the second rename fails)."""
    tfds = _tfds()
    ready = _ready_builder(tfds, name, data_dir)
    if ready is not None:
        return ready
    with _one_preparer(name, data_dir):
        # Another process may have prepared it while this one waited.
        ready = _ready_builder(tfds, name, data_dir)
        return ready if ready is not None else _prepare(tfds, name, data_dir)


def _ready_builder(tfds, name: str, data_dir: str | None):
    """The builder of `name` if it is prepared (for Fashion-MNIST, tfds' own or the
    offline one from the IDX files), else None."""
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if name == "fashion_mnist":
        from aevae_jax.data import fashion_mnist_idx

        offline = fashion_mnist_idx.FashionMnistIdx(data_dir=data_dir)
        if offline.is_prepared():
            return offline
    return None


def _tfds_root(data_dir: str | None) -> str:
    """The folder tfds prepares data sets in (unexpanded, as a user would write it)."""
    return data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"


@contextlib.contextmanager
def _one_preparer(name: str, data_dir: str | None):
    """Hold an exclusive lock on `<data dir>/.<name>.lock` (POSIX `flock`; released when
    the process ends, however it ends)."""
    root = os.path.expanduser(_tfds_root(data_dir))
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{name}.lock"), "a") as f:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare(tfds, name: str, data_dir: str | None):
    """Prepare `name`: Fashion-MNIST from the local IDX files, else by tfds' download."""
    if name == "fashion_mnist":
        from aevae_jax.data import fashion_mnist_idx

        if fashion_mnist_idx.idx_files_present():
            offline = fashion_mnist_idx.FashionMnistIdx(data_dir=data_dir)
            config = tfds.download.DownloadConfig(manual_dir=fashion_mnist_idx.idx_dir())
            offline.download_and_prepare(download_config=config)
            return offline
    if network_available():
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
        return builder
    remedy = (
        "install Debian's package with `sudo apt-get install dataset-fashion-mnist` "
        "(or set AEVAE_FASHION_MNIST_DIR to a folder with the four IDX .gz files), or "
        if name == "fashion_mnist"
        else ""
    )
    raise UserError(
        f"dataset {name!r} is not prepared in {_tfds_root(data_dir)} and "
        f"cannot be downloaded (no network). Remedy: {remedy}run `tfds build {name}` on a "
        "machine with network and copy its ~/tensorflow_datasets folder here (or pass "
        "--data-dir), or pass your own data as an .npz file."
    )


def _load_tfds(name: str, data_dir: str | None) -> Dataset:
    """Through tfds the first time; after that from the decoded copy (see decoded.py)."""
    root = os.path.expanduser(_tfds_root(data_dir))
    copy = decoded.read(root, name)
    if copy is not None:
        return copy
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
    dataset = Dataset(
        name=name,
        x_train=splits["train"][0],
        x_test=splits["test"][0],
        y_train=splits["train"][1],
        y_test=splits["test"][1],
        class_names=class_names,
    )
    decoded.write(root, name, dataset, builder.data_dir)
    return dataset


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
        DataShape(
            sprites.NAME,
            (sprites.SIZE, sprites.SIZE, 1),
            len(sprites.SHAPES),
            22_118,
            2_458,
            sprites.SHAPES,
        ),
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
    with open_npz(name) as zf:
        members = npz_members(zf, name)
        headers = {k: npz_header(zf, name, k, m) for k, m in members.items()}
        image_shape, n_train, n_test = check_headers(headers)
        num_classes = None
        if "y_train" in members:
            n = {"y_train": n_train, "y_test": n_test}
            top = max(
                int(validate_labels(npz_array(zf, name, k, members[k]), n[k], k).max())
                for k in ("y_train", "y_test")
            )
            num_classes = top + 1
    stem = os.path.splitext(os.path.basename(name))[0]  # the name load_npz gives
    return DataShape(stem, image_shape, num_classes, n_train, n_test)
