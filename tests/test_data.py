"""Data: the offline Fashion-MNIST against its published statistics, tfds names through
mock data, .npz input and its errors, the fast offline failure, and preprocessing."""

import dataclasses
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from aevae_jax.data import decoded, npz, sources
from aevae_jax.data.fashion_mnist_idx import FashionMnistIdx
from aevae_jax.data.preprocess import bernoulli_threshold, preprocess
from aevae_jax.data.sources import (
    KNOWN_SHAPES,
    PHOTOS_NAME,
    TFDS_NAMES,
    describe_dataset,
    load_dataset,
    load_sklearn_photos,
)
from aevae_jax.data.spec import Dataset, DataShape, describe_arrays
from aevae_jax.data.validate import validate_dataset
from aevae_jax.errors import UserError


def test_offline_fashion_mnist_shapes_dtypes_and_published_statistics(fashion_mnist):
    ds = fashion_mnist
    assert ds.x_train.shape == (60_000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10_000, 28, 28, 1) and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int32 and ds.y_train.shape == (60_000,)
    # Published: 6,000 / 1,000 images per class; train pixel mean 0.2860, std 0.3530.
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    train = ds.x_train.astype(np.float64) / 255
    assert train.mean() == pytest.approx(0.2860, abs=5e-5)
    assert train.std() == pytest.approx(0.3530, abs=5e-5)
    assert ds.class_names[0] == "T-shirt/top" and ds.num_classes == 10


def test_offline_builder_is_tfds_fashion_mnist_with_another_file_source():
    # Same features, version and example generator (so the same keys, hence tfds'
    # own shuffled order); only _split_generators, the file source, is ours.
    from tensorflow_datasets.image_classification.mnist import FashionMNIST

    assert issubclass(FashionMnistIdx, FashionMNIST)
    assert FashionMnistIdx._generate_examples is FashionMNIST._generate_examples
    assert FashionMnistIdx._info is FashionMNIST._info
    assert FashionMnistIdx.VERSION == FashionMNIST.VERSION


def test_offline_fashion_mnist_matches_the_idx_files_as_a_set(fashion_mnist):
    import gzip

    from aevae_jax.data.fashion_mnist_idx import FILES, idx_dir

    with gzip.open(f"{idx_dir()}/{FILES['test_data']}") as f:
        raw = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28, 1)
    with gzip.open(f"{idx_dir()}/{FILES['test_labels']}") as f:
        raw_labels = np.frombuffer(f.read()[8:], np.uint8)

    # tfds stores examples in a hashed order: equal as sets of (image, label) pairs.
    def keyed(x, y):
        return sorted(zip((im.tobytes() for im in x), y.tolist(), strict=True))

    assert keyed(fashion_mnist.x_test, fashion_mnist.y_test) == keyed(raw, raw_labels)


@pytest.mark.parametrize(
    "name,shape", [("mnist", (28, 28, 1)), ("kmnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_tfds_names_load_through_tfds(name, shape, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "network_available", lambda timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset(name, data_dir=str(tmp_path))
    assert ds.x_train.shape == (12, *shape) and ds.x_train.dtype == np.uint8
    assert ds.y_train.shape == (12,) and ds.y_train.dtype == np.int32
    assert ds.num_classes == 10
    described = describe_dataset(name)
    assert (described.image_shape, described.num_classes) == (shape, 10)


def test_binarized_mnist_loads_without_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "network_available", lambda timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset("binarized_mnist", data_dir=str(tmp_path))
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.y_train is None and ds.num_classes is None
    assert describe_dataset("binarized_mnist") == DataShape(
        "binarized_mnist", (28, 28, 1), None, 50_000, 10_000
    )


def test_unprepared_dataset_without_network_fails_fast_with_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVAE_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError, match="tfds build mnist"):
        load_dataset("mnist", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 10


def test_fashion_mnist_without_idx_files_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVAE_OFFLINE", "1")
    monkeypatch.setenv("AEVAE_FASHION_MNIST_DIR", str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path / "tfds"))


def test_offline_switch_skips_the_network_probe(monkeypatch):
    monkeypatch.setenv("AEVAE_OFFLINE", "1")
    start = time.perf_counter()
    assert sources.network_available(timeout=30.0) is False
    assert time.perf_counter() - start < 0.1


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(UserError, match="fashion_mnist, mnist"):
        load_dataset("imagenet")


# --------------------------------------------------------------------------- .npz input


def test_npz_with_sklearn_digits(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # real 8x8 digits in [0, 1]
    path = tmp_path / "digits.npz"
    np.savez(
        path,
        x_train=images[:1500],
        y_train=digits.target[:1500],
        x_test=images[1500:],
        y_test=digits.target[1500:],
    )
    ds = load_dataset(str(path))
    assert ds.x_train.shape == (1500, 8, 8, 1) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (297, 8, 8, 1) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train[..., 0], images[:1500])
    assert ds.name == "digits"


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


GOOD = np.zeros((4, 8, 8), np.uint8)
LABELS = np.arange(4) % 2


def _labelled(y_train, y_test=LABELS):
    return dict(x_train=GOOD, x_test=GOOD, y_train=y_train, y_test=y_test)


# (arrays, message, whether describe_dataset finds it too: every check but the values of
# the images).
BAD_DATA = [
    (dict(x_train=GOOD), "lacks x_test", True),
    (dict(x_train=np.zeros((4, 64), np.uint8), x_test=GOOD), r"\[N, H, W\]", True),
    (dict(x_train=np.zeros((0, 8, 8), np.uint8), x_test=GOOD), "x_train is empty", True),
    (dict(x_train=GOOD, x_test=np.zeros((0, 8, 8), np.float32)), "x_test is empty", True),
    (dict(x_train=np.zeros((4, 0, 8), np.uint8), x_test=GOOD), "empty image dimension", True),
    (dict(x_train=GOOD, x_test=np.zeros((4, 8, 8, 0), np.uint8)), "H, W and C", True),
    (dict(x_train=GOOD.astype(np.complex64), x_test=GOOD), "dtype complex64", True),
    (dict(x_train=GOOD, x_test=np.zeros((4, 9, 9), np.uint8)), "same image shape", True),
    (dict(x_train=GOOD, x_test=np.zeros((4, 8, 8, 3), np.uint8)), "same image shape", True),
    (_labelled(np.zeros(3, int)), "vector of 4 labels", True),
    (_labelled(LABELS, np.zeros((4, 1), int)), r"y_test must be a vector .* \(4, 1\)", True),
    (dict(x_train=GOOD, x_test=GOOD, y_train=LABELS), "both splits", True),
    (_labelled(np.array(list("abab"))), "store class labels as integers", True),
    (_labelled(np.array([0, 1, np.nan, 1])), "1 NaN or infinite labels .* index 2", True),
    (_labelled(np.array([0, 1, 0.5, 1])), r"non-integer labels \(0.5 at index 2\)", True),
    (_labelled(LABELS, np.array([0, -1, 0, 1])), "negative labels", True),
    (_labelled(np.array([0, 1, 5000, 1])), "label 5000 but at most 1000 classes", True),
    (_labelled(np.array([0, 1, 2**40, 1])), "at most 1000 classes", True),
    (dict(x_train=np.full((4, 8, 8), np.nan, np.float32), x_test=GOOD), "NaN", False),
    (dict(x_train=GOOD, x_test=np.full((4, 8, 8), np.inf)), "infinite", False),
    (dict(x_train=np.full((4, 8, 8), 255.0, np.float32), x_test=GOOD), "divide 0-255", False),
    (dict(x_train=-np.ones((4, 8, 8), np.float32), x_test=GOOD), r"\[0, 1\]", False),
    (dict(x_train=np.full((4, 8, 8), 300), x_test=GOOD), r"\[300, 300\] .* 0\.\.255", False),
    (dict(x_train=GOOD, x_test=-np.ones((4, 8, 8), np.int8)), "must lie in 0..255", False),
    (dict(x_train=np.eye(8, dtype=int)[None].repeat(4, 0), x_test=GOOD), "0 and 1", False),
]


@pytest.mark.parametrize("arrays,message,shape_level", BAD_DATA)
def test_bad_data_gets_one_clear_error_the_same_from_npz_python_and_describe(
    tmp_path, arrays, message, shape_level
):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(UserError, match=message) as from_npz:
        load_dataset(path)
    if "x_test" in arrays:  # a Dataset without x_test: "x_test is missing"
        ds = Dataset("d", *(arrays.get(k) for k in ("x_train", "x_test", "y_train", "y_test")))
        with pytest.raises(UserError) as from_python:
            validate_dataset(ds)
        assert str(from_python.value) == str(from_npz.value)
    if shape_level:
        with pytest.raises(UserError) as from_describe:
            describe_dataset(path)
        assert str(from_describe.value) == str(from_npz.value)
    else:  # the image values are the load's to check
        assert describe_dataset(path).n_train == len(arrays["x_train"])


def test_accepted_variants_are_normalised(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 6, 7))
    path = _npz(
        tmp_path,
        x_train=grey,  # int64 within 0..255
        x_test=rng.random((3, 6, 7, 1)) > 0.5,  # bool
        y_train=np.array([0.0, 1.0, 2.0, 1.0, 0.0]),  # whole-number floats
        y_test=np.array([True, False, True]),  # bool
        notes=np.arange(3),  # members other than x_*, y_* are ignored
    )
    ds = load_dataset(path)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (5, 6, 7, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], grey)
    assert ds.x_test.dtype == np.uint8 and set(np.unique(ds.x_test).tolist()) <= {0, 255}
    assert ds.y_train.dtype == ds.y_test.dtype == np.int32
    np.testing.assert_array_equal(ds.y_test, [1, 0, 1])
    assert ds.num_classes == 3
    # Any channel count: the models and figures take C channels.
    two = np.zeros((4, 8, 8, 2), np.float64)
    assert load_dataset(_npz(tmp_path, x_train=two, x_test=two)).x_train.dtype == np.float32


def test_npz_with_a_stray_file_in_the_archive_ignores_it(tmp_path):
    import zipfile

    path = _npz(tmp_path, x_train=GOOD, x_test=GOOD)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("README.txt", "my data")
    assert load_dataset(path).x_train.shape == (4, 8, 8, 1)
    assert describe_dataset(path).n_test == 4


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), x_test=GOOD)
    for read in (load_dataset, describe_dataset):
        with pytest.raises(UserError, match="without pickle"):
            read(str(path))


def test_missing_corrupt_unreadable_or_misnamed_data_files(tmp_path, monkeypatch):
    import zipfile

    with pytest.raises(UserError, match="no such data file"):
        load_dataset(str(tmp_path / "none.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable"):
        load_dataset(str(bad))
    member = tmp_path / "member.npz"
    with zipfile.ZipFile(member, "w") as zf:
        zf.writestr("x_train.npy", b"\x93NUMPY garbage")
        zf.writestr("x_test.npy", b"")
    for read in (load_dataset, describe_dataset):
        with pytest.raises(UserError, match="member 'x_train' is not a readable NumPy array"):
            read(str(member))
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises(UserError, match="is a directory"):
        load_dataset(str(folder))
    with pytest.raises(UserError, match="is a directory"):
        load_dataset(str(tmp_path))
    npy = tmp_path / "x.npy"
    np.save(npy, GOOD)
    with pytest.raises(UserError, match=r"not an \.npz file; save the arrays with np\.savez"):
        load_dataset(str(npy))
    with pytest.raises(UserError, match=r"unknown dataset 'nothing\.npy'"):
        load_dataset("nothing.npy")
    good = _npz(tmp_path, x_train=GOOD, x_test=GOOD)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(npz.zipfile, "ZipFile", denied)  # root may read any file
    for read in (load_dataset, describe_dataset):
        with pytest.raises(UserError, match=r"cannot be read \(Permission denied\)"):
            read(good)


# ------------------------------------------------------------------- validate_dataset


def test_validate_dataset_normalises_a_hand_built_dataset_and_keeps_good_arrays():
    x = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2], np.int32)
    ds = Dataset("mine", x[:4], x[4:], y[:4], y[4:], ("a", "b", "c"))
    assert validate_dataset(ds).x_train is ds.x_train  # nothing copied
    assert validate_dataset(ds).y_test is ds.y_test
    floats = Dataset("mine", x[:4, ..., 0] / 255.0, x[4:, ..., 0] / 255.0, [0, 1, 0, 1], [1, 0])
    out = validate_dataset(floats)
    assert out.x_train.dtype == np.float32 and out.x_train.shape == (4, 4, 4, 1)
    assert out.y_train.dtype == np.int32 and out.num_classes == 2
    with pytest.raises(UserError, match="x_test is missing"):
        validate_dataset(Dataset("mine", x, None))
    with pytest.raises(UserError, match="class_names has 2 names but the labels go up to 2"):
        validate_dataset(dataclasses.replace(ds, class_names=("a", "b")))
    with pytest.raises(UserError, match="sequence of strings"):
        validate_dataset(dataclasses.replace(ds, class_names="abc"))
    with pytest.raises(UserError, match="non-empty string"):
        validate_dataset(dataclasses.replace(ds, name=""))
    with pytest.raises(UserError, match="x_train has dtype object"):
        validate_dataset(Dataset("mine", np.empty((4, 2, 2, 1), object), x))


# -------------------------------------------------------------------- describe_dataset


def test_describe_npz_equals_the_loaded_shape(tmp_path):
    x = np.random.default_rng(0).random((7, 6, 5), np.float32)
    labelled = str(tmp_path / "l.npz")
    np.savez_compressed(
        labelled, x_train=x, x_test=x[:3], y_train=np.arange(7) % 4, y_test=[5, 0, 1]
    )
    shape = describe_dataset(labelled)
    assert shape == DataShape("l", (6, 5, 1), 6, 7, 3)
    assert shape == describe_arrays(load_dataset(labelled))
    plain = _npz(
        tmp_path, x_train=np.zeros((9, 8, 8, 3), np.uint8), x_test=GOOD[..., None].repeat(3, -1)
    )
    assert describe_dataset(plain) == DataShape("d", (8, 8, 3), None, 9, 4)


def test_describe_built_in_data_sets(fashion_mnist):
    assert describe_dataset("fashion_mnist") == describe_arrays(fashion_mnist)
    assert describe_dataset(PHOTOS_NAME) == describe_arrays(load_sklearn_photos())
    assert set(KNOWN_SHAPES) == {*TFDS_NAMES, PHOTOS_NAME, "sprites"}  # test_sprites.py: its shape
    with pytest.raises(UserError) as described:
        describe_dataset("imagenet")
    with pytest.raises(UserError) as loaded:
        load_dataset("imagenet")
    assert str(described.value) == str(loaded.value)


def test_describe_npz_reads_headers_and_labels_but_no_images(tmp_path, monkeypatch):
    path = _npz(
        tmp_path,
        x_train=np.zeros((60_000, 28, 28), np.uint8),
        x_test=np.zeros((10_000, 28, 28), np.uint8),
        y_train=np.arange(60_000) % 10,
        y_test=np.arange(10_000) % 10,
    )
    read = np.lib.format.read_array
    shapes = []

    def spy(*args, **kwargs):
        array = read(*args, **kwargs)
        shapes.append(array.shape)
        return array

    monkeypatch.setattr(np.lib.format, "read_array", spy)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load reads whole members"))
    start = time.perf_counter()
    shape = describe_dataset(path)
    assert time.perf_counter() - start < 0.5
    assert shape == DataShape("d", (28, 28, 1), 10, 60_000, 10_000)
    assert shapes == [(60_000,), (10_000,)]  # the labels only


def test_train_size_beyond_the_split_is_an_error(fashion_mnist):
    assert len(fashion_mnist.take_train(100).x_train) == 100
    with pytest.raises(UserError, match="larger than the training split"):
        fashion_mnist.take_train(60_001)


# ------------------------------------------------------------------------ preprocessing


def test_preprocess_none_scales_uint8_to_unit_interval():
    x = jnp.array([[0, 51, 255]], jnp.uint8)
    np.testing.assert_allclose(preprocess(x, "none", None), [[0.0, 0.2, 1.0]])


def test_dynamic_binarization_thresholds_are_exact_to_2_pow_minus_17():
    # P(x = 1) = t / 2^16 over the 2^16 equally likely 16-bit draws u, x = [u < t].
    k = np.arange(256)
    t = np.asarray(bernoulli_threshold(jnp.asarray(k, jnp.uint8))).astype(np.int64)
    np.testing.assert_array_equal(t, np.round(k * 65536 / 255))  # no float rounding
    assert t[0] == 0 and t[255] == 65536  # black is always 0, white always 1
    assert np.abs(t / 65536 - k / 255).max() <= 2.0**-17
    p = np.linspace(0, 1, 1001, dtype=np.float32)  # a user's float images
    tf = np.asarray(bernoulli_threshold(jnp.asarray(p))).astype(np.int64)
    assert np.abs(tf / 65536 - p.astype(np.float64)).max() <= 2.0**-17 + 1e-7


def test_dynamic_binarization_uses_16_bits_per_pixel_as_specified():
    # By hand from the key's words: pixel j of a row takes the high half of word j,
    # pixel ceil(D/2) + j the low half; the pixel is 1 when that half is below t.
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 7, 7, 1)), jnp.uint8)
    key = jax.random.key(3)
    words = np.asarray(jax.random.bits(key, (5, 25), jnp.uint32))
    u = np.concatenate([words >> 16, words & 0xFFFF], axis=1)[:, :49].reshape(x.shape)
    t = np.round(np.asarray(x, np.int64) * 65536 / 255)
    np.testing.assert_array_equal(preprocess(x, "dynamic", key), (u < t).astype(np.float32))


def test_dynamic_binarization_is_bernoulli_of_the_grey_level_and_keyed():
    levels = jnp.tile(jnp.arange(256, dtype=jnp.uint8), (4096, 1))  # 4,096 draws per level
    a = np.asarray(preprocess(levels, "dynamic", jax.random.key(0)))
    assert set(np.unique(a).tolist()) == {0.0, 1.0}
    p = np.arange(256) / 255
    freq = a.mean(axis=0)
    assert freq[0] == 0.0 and freq[255] == 1.0
    sd = np.sqrt(p * (1 - p) / 4096)
    z = (freq - p)[1:255] / sd[1:255]
    assert np.abs(z).max() < 5.0
    assert np.mean(z**2) == pytest.approx(1.0, abs=0.3)  # chi-square / dof near 1
    # One key gives the same bits; another key, and the next step's key, others.
    np.testing.assert_array_equal(a, preprocess(levels, "dynamic", jax.random.key(0)))
    assert not np.array_equal(a, preprocess(levels, "dynamic", jax.random.key(1)))
    step = jax.random.fold_in(jax.random.key(0), 1)
    assert not np.array_equal(a, preprocess(levels, "dynamic", step))
    # An example's draw does not depend on the batch it sits in (nor on its sharding).
    np.testing.assert_array_equal(a[:100], preprocess(levels[:100], "dynamic", jax.random.key(0)))


def test_static_binarization_is_fixed_per_example_index():
    x = jnp.full((6, 4, 4, 1), 128, jnp.uint8)
    idx = jnp.arange(6)
    a = preprocess(x, "static", jax.random.key(0), idx)
    b = preprocess(x, "static", jax.random.key(99), idx)  # the step key is ignored
    np.testing.assert_array_equal(a, b)
    # The same example drawn in another batch position gives the same image.
    c = preprocess(x[::-1], "static", None, idx[::-1])
    np.testing.assert_array_equal(c[::-1], a)
    assert not np.array_equal(a[0], a[1])
    # Test examples get a draw of their own.
    t = preprocess(x, "static", None, idx, split=1)
    assert not np.array_equal(t, a)


# ------------------------------------------------------------- one preparer at a time


def test_a_second_process_waits_for_the_first_to_finish_preparing(tmp_path):
    # The parent holds the lock while it "prepares" (writes a marker after a pause); the
    # child enters only after the parent has left, so it finds the marker.
    marker = tmp_path / "prepared"
    child = textwrap.dedent(f"""
        import os
        from aevae_jax.data.sources import _one_preparer
        print("waiting", flush=True)
        with _one_preparer("fashion_mnist", {str(tmp_path)!r}):
            print("found" if os.path.exists({str(marker)!r}) else "missing", flush=True)
    """)
    with sources._one_preparer("fashion_mnist", str(tmp_path)):
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "waiting\n"  # it has started, and must now wait
        time.sleep(0.5)
        marker.write_text("done")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "found\n"
    assert (tmp_path / ".fashion_mnist.lock").is_file()


def test_a_data_set_prepared_while_waiting_is_not_prepared_again(monkeypatch, tmp_path):
    ready = iter([None, "prepared by the other process"])
    monkeypatch.setattr(sources, "_ready_builder", lambda tfds, name, data_dir: next(ready))

    def prepare(tfds, name, data_dir):
        raise AssertionError("prepared twice")

    monkeypatch.setattr(sources, "_prepare", prepare)
    assert sources._prepared_builder("mnist", str(tmp_path)) == "prepared by the other process"


# ------------------------------------------------------------------ decoded copies


def _tfds_folder(tmp_path):
    folder = tmp_path / "tfds" / "toy" / "1.0.0"
    folder.mkdir(parents=True)
    (folder / "toy-train.tfrecord").write_bytes(b"records")
    (folder / "dataset_info.json").write_text("{}")
    return folder


def test_a_decoded_copy_returns_the_arrays_it_was_written_with(tmp_path):
    folder, root = _tfds_folder(tmp_path), str(tmp_path / "tfds")
    rng = np.random.default_rng(0)
    ds = Dataset("toy", rng.integers(0, 256, (5, 3, 3, 1), dtype=np.uint8),
                 rng.integers(0, 256, (2, 3, 3, 1), dtype=np.uint8),
                 np.array([0, 1, 2, 0, 1], np.int32), np.array([2, 0], np.int32),
                 ("a", "b/c", "dé"))  # fmt: skip
    assert decoded.read(root, "toy") is None
    assert decoded.write(root, "toy", ds, str(folder))
    back = decoded.read(root, "toy")
    for k in ("x_train", "x_test", "y_train", "y_test"):
        a, b = getattr(ds, k), getattr(back, k)
        assert a.dtype == b.dtype and np.array_equal(a, b), k
    assert back.class_names == ds.class_names and back.name == "toy"
    unlabelled = Dataset("toy", ds.x_train, ds.x_test)
    assert decoded.write(root, "toy", unlabelled, str(folder))
    back = decoded.read(root, "toy")
    assert back.y_train is None and back.y_test is None and back.class_names is None
    assert not list((tmp_path / "tfds" / decoded.FOLDER).glob("*.partial"))


def test_a_decoded_copy_is_ignored_once_its_tfds_folder_changes_or_it_is_damaged(tmp_path):
    folder, root = _tfds_folder(tmp_path), str(tmp_path / "tfds")
    ds = Dataset("toy", np.zeros((2, 2, 2, 1), np.uint8), np.ones((1, 2, 2, 1), np.uint8))
    decoded.write(root, "toy", ds, str(folder))
    (folder / "toy-train.tfrecord").write_bytes(b"other records")  # rebuilt
    assert decoded.read(root, "toy") is None
    decoded.write(root, "toy", ds, str(folder))
    (folder / "extra.json").write_text("{}")  # a file more
    assert decoded.read(root, "toy") is None
    decoded.write(root, "toy", ds, str(folder))
    path = decoded.copy_path(root, "toy")
    with open(path, "r+b") as f:
        f.truncate(100)  # damaged
    assert decoded.read(root, "toy") is None
    decoded.write(root, "toy", ds, str(folder))
    shutil.rmtree(folder)  # gone
    assert decoded.read(root, "toy") is None


def test_a_folder_that_cannot_be_written_only_costs_the_copy(tmp_path):
    ds = Dataset("toy", np.zeros((2, 2, 2, 1), np.uint8), np.ones((1, 2, 2, 1), np.uint8))
    blocked = tmp_path / "tfds"
    blocked.write_text("a file where the folder would be")
    assert not decoded.write(str(blocked), "toy", ds, str(tmp_path))


def test_fashion_mnist_loads_from_its_decoded_copy_as_tfds_gives_it(fashion_mnist, monkeypatch):
    # The session's load wrote (or read) the copy; through tfds again, the same arrays.
    import os

    root = os.path.expanduser(sources._tfds_root(None))
    assert decoded.read(root, "fashion_mnist") is not None
    monkeypatch.setattr(decoded, "read", lambda root, name: None)
    fresh = load_dataset("fashion_mnist")
    for k in ("x_train", "x_test", "y_train", "y_test"):
        a, b = getattr(fashion_mnist, k), getattr(fresh, k)
        assert a.dtype == b.dtype and np.array_equal(a, b), k
    assert fresh.class_names == fashion_mnist.class_names
