"""A user's data set in an `.npz` file, read without pickle: every array header is
checked before any data is read, then the values (`validate`).
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from aevae_jax.data.spec import Dataset
from aevae_jax.data.validate import NPZ_HOWTO, SPLIT_KEYS, check_headers, check_values
from aevae_jax.errors import UserError, require


def load_npz(path: str) -> Dataset:
    """A user's data set from an .npz (no pickle): x_* images, optional y_* labels; other
    members are ignored. Every array header is checked (`check_headers`, the checks that
    `describe_dataset` makes) before any data is read, then the values (`check_values`,
    the checks of `validate_dataset`)."""
    with open_npz(path) as zf:
        members = npz_members(zf, path)
        check_headers({k: npz_header(zf, path, k, m) for k, m in members.items()})
        arrays = {k: npz_array(zf, path, k, m) for k, m in members.items()}
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, *check_values(arrays))


def open_npz(path: str) -> zipfile.ZipFile:
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


def npz_members(zf: zipfile.ZipFile, path: str) -> dict[str, str]:
    """The zip member of each of x_train, x_test, y_train, y_test that is present (as
    np.load names them: 'x_train.npy' is x_train). Other members are ignored."""
    names = set(zf.namelist())
    members = {}
    for k in SPLIT_KEYS:
        for m in (f"{k}.npy", k):
            if m in names:
                members[k] = m
                break
    missing = [k for k in ("x_train", "x_test") if k not in members]
    if missing:
        have = sorted(m[:-4] if m.endswith(".npy") else m for m in names)
        raise UserError(
            f"{path} lacks {', '.join(missing)}; it has {', '.join(have) or 'nothing'}. "
            f"Save it with {NPZ_HOWTO} (labels optional)"
        )
    return members


_READ_ERRORS = (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error)


def npz_header(zf: zipfile.ZipFile, path: str, key: str, member: str):
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
        f"pickle; save plain numeric arrays with {NPZ_HOWTO}",
    )
    return shape, dtype


def npz_array(zf: zipfile.ZipFile, path: str, key: str, member: str) -> np.ndarray:
    try:
        with zf.open(member) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except _READ_ERRORS as e:
        raise UserError(
            f"{path}: member {key!r} is not a readable NumPy array ({e}); write the file "
            "with np.savez"
        ) from None
