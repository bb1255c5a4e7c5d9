"""Validation of image and label arrays, with one message per mistake naming the remedy:
images [N, H, W] or [N, H, W, C] (any C >= 1), uint8, bool (-> 0/255), integers within
0..255 (-> uint8; only-0-and-1 integers are refused as a likely mistake), or floats in
[0, 1] without NaN or infinity (-> float32); labels for both splits or neither, one per
image, integers 0..K-1 with K <= MAX_CLASSES (-> int32).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aevae_jax.data.spec import Dataset
from aevae_jax.errors import UserError, require

# The most classes a labelled data set may have. Conditional models one-hot their labels
# and the linear probe keeps a [latent, K] weight, so a stray label (a 60000 in place of 6)
# would silently allocate a huge table; 1000 is ImageNet's count, far above any data set
# this code is meant for.
MAX_CLASSES = 1000


SPLIT_KEYS = ("x_train", "x_test", "y_train", "y_test")


NPZ_HOWTO = "np.savez(path, x_train=..., x_test=..., y_train=..., y_test=...)"


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
        f"expected an aevae_jax.data.spec.Dataset; got {type(ds).__name__}. Build one with "
        "Dataset(name, x_train, x_test, y_train, y_test)",
    )
    require(
        isinstance(ds.name, str) and ds.name != "",
        f"Dataset name must be a non-empty string; got {ds.name!r}",
    )
    arrays = {k: _as_array(getattr(ds, k), k) for k in SPLIT_KEYS}
    check_headers({k: None if v is None else (v.shape, v.dtype) for k, v in arrays.items()})
    x_train, x_test, y_train, y_test = check_values(arrays)
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


def check_headers(headers: dict) -> tuple[tuple[int, ...], int, int]:
    """The checks that need only shapes and dtypes (`headers`: key -> (shape, dtype), or
    None for an absent member). Returns (image shape [H, W, C], n_train, n_test)."""
    missing = [k for k in ("x_train", "x_test") if headers.get(k) is None]
    require(
        not missing,
        f"the data lacks {', '.join(missing)}; save it with {NPZ_HOWTO} (labels optional)",
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


def check_values(arrays: dict) -> tuple:
    """The checks that read the values, after `check_headers`: the normalised
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
