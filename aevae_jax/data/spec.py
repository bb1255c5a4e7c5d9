"""What a data set is, without its arrays: `DataSpec` (what a model factory is told),
`DataShape` (split sizes and classes, known before loading) and `Dataset` (the arrays).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aevae_jax.errors import require


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
    # Known generative factors of the test images (data/sprites.py): indices [N_test, K]
    # int32 and their names; the evaluator's disentanglement metrics read them.
    factors_test: np.ndarray | None = None
    factor_names: tuple[str, ...] | None = None

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
