"""The sprites data set: every factor combination drawn once, exactly as specified,
deterministically, whole at every position, and cached without losing a bit."""

import os

import numpy as np
import pytest

from aevae_jax.data import sprites
from aevae_jax.data.sources import describe_dataset, load_dataset
from aevae_jax.data.spec import describe_arrays


@pytest.fixture(scope="module")
def drawn():
    return sprites.generate()


def test_every_combination_is_drawn_once_and_told_apart(drawn):
    images, factors = drawn
    n = int(np.prod(sprites.FACTOR_SIZES))
    assert images.shape == (n, 32, 32, 1) and images.dtype == np.uint8
    assert factors.shape == (n, 5) and factors.dtype == np.int32
    assert len(np.unique(factors, axis=0)) == n
    assert len(np.unique(images.reshape(n, -1), axis=0)) == n  # no two factor values alike
    # Image i has the factors of the i-th cell of the grid, in C order.
    i = np.ravel_multi_index((2, 1, 5, 3, 9), sprites.FACTOR_SIZES)
    assert factors[i].tolist() == [2, 1, 5, 3, 9]


def test_a_square_is_drawn_as_by_hand(drawn):
    # Scale 1, orientation 0, centre (16, 16): half-side 0.7 * 7.5 = 5.25 pixels, so
    # columns 11..20 are inside and columns 10 and 21 a quarter inside (1 of 4 samples).
    images, _ = drawn
    i = np.ravel_multi_index((0, 3, 0, 8, 8), sprites.FACTOR_SIZES)
    row = images[i, 16, :, 0]
    assert row.tolist() == [0] * 10 + [64] + [255] * 10 + [64] + [0] * 10
    assert (images[i, :, 16, 0] == row).all()  # a square at 0 degrees is symmetric
    # Moved one step right: the same pixels one column on.
    j = np.ravel_multi_index((0, 3, 0, 9, 8), sprites.FACTOR_SIZES)
    assert (images[j, 16, 1:, 0] == row[:-1]).all()


def test_no_sprite_is_cut_off_and_larger_scales_cover_more(drawn):
    images, _ = drawn
    ink = images.reshape(*sprites.FACTOR_SIZES, -1).astype(np.int64).sum(-1)
    # The same sprite at every position: the same ink, so no position cuts it off.
    assert (ink == ink[..., :1, :1]).all()
    per_scale = ink[..., 0, 0].mean(axis=(0, 2))
    assert np.all(np.diff(per_scale) > 0)
    assert images[:, :, -1].max() == 0  # the disc of radius 7.5 stops short of the edge


def test_the_data_set_loads_by_name_with_its_test_factors_and_its_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVAE_CACHE", str(tmp_path))
    ds = load_dataset("sprites")
    assert describe_arrays(ds) == describe_dataset("sprites")
    assert ds.class_names == ("square", "ellipse", "heart")
    test = sprites.test_indices(len(ds.x_train) + len(ds.x_test))
    assert len(test) == 2458 and (np.diff(test) > 0).all()
    factors = sprites.all_factors()
    np.testing.assert_array_equal(ds.factors_test, factors[test])
    np.testing.assert_array_equal(ds.y_test, factors[test, 0])
    np.testing.assert_array_equal(sprites.sprite_factors("test"), ds.factors_test)
    assert ds.factor_names == sprites.FACTORS
    cache = tmp_path / "sprites-v1.npz"
    assert cache.exists()
    again = load_dataset("sprites")  # from the cache: the same bits
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    # A damaged copy is drawn anew, and the new copy is whole.
    cache.write_bytes(b"not an npz")
    redrawn = load_dataset("sprites")
    np.testing.assert_array_equal(redrawn.x_test, ds.x_test)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial.npz")]
