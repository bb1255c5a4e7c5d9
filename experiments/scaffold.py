"""What every script in experiments/ shares: its command line, its data, a cache of
trained models, statistics over seeds, and its result files.

An experiment script is `main(argv)`: parse with `parser`, turn the options into a
`Setting`, train through `trained` (every seed at once, one compiled program), measure,
and hand tables, numbers, verdicts and figures to a `Results`, which writes
`<out>/<name>.md` and `<out>/<name>.json`.

Trained models are cached by configuration: `trained` keeps each model's seeds in
`<cache>/<model>-<digest of its RunConfig>/seed_<s>`, so an experiment that needs the
same model as another one (the latent-16 AE and VAE serve five of them) reads it back
instead of training it again, and an interrupted experiment resumes where it stopped.
Two experiments should not run at once on the same cache.

Every training set is named by a tfds name or an `.npz` file (`save_npz`): a subset
or one class of Fashion-MNIST is written to the cache first, so each run's config.json
says exactly what it was trained on.

`--quick` trains for one epoch on the first 1,024 training and 512 test images, for
smoke tests; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.config import DataConfig, ModelConfig, RunConfig
from aevae_jax.data.sources import load_dataset
from aevae_jax.data.spec import Dataset
from aevae_jax.errors import UserError, require
from aevae_jax.evaluate.scores import iwae_bound, reconstruction_errors
from aevae_jax.evaluate.split import SplitMap, encode_example
from aevae_jax.evaluate.split import one as single
from aevae_jax.study.verdicts import mean_std, seed_spread
from aevae_jax.train.fit import FitResult, fit_seeds
from aevae_jax.train.rundir import RunWarning, has_run
from aevae_jax.writing import markdown_table as table_lines
from aevae_jax.writing import number, write_json

QUICK_TRAIN, QUICK_TEST, QUICK_EPOCHS = 1024, 512, 1
DEFAULT_SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class Setting:
    """An experiment's options once parsed (see `parser`)."""

    name: str
    dataset: str
    seeds: tuple[int, ...]
    epochs: int
    quick: bool
    out: str
    cache: str
    tensorboard: bool
    progress: bool
    iwae_k: int
    argv: tuple[str, ...] = ()

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def parser(name: str, description: str, epochs: int = 10, iwae_k: int = 100):
    """The options every experiment takes; a script adds its own to the result."""
    p = argparse.ArgumentParser(
        prog=f"experiments/{name}.py",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a smoke test: 1 epoch on a subset")
    p.add_argument("--dataset", default="fashion_mnist", help="tfds name or .npz file")
    p.add_argument("--seeds", default="0,1,2", help="seeds trained together (at least 3)")
    p.add_argument("--epochs", type=int, default=epochs, help="epochs of every model")
    p.add_argument("--iwae-k", type=int, default=iwae_k, help="importance samples of NLLs")
    results = f"experiments/results/{name}, or runs/experiments/quick/{name} with --quick"
    p.add_argument("--out", default=None, help=f"results directory (default: {results})")
    p.add_argument("--cache", default="runs/experiments/cache", help="trained-model cache")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard summaries")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def setting(name: str, args: argparse.Namespace, argv=None) -> Setting:
    """A `Setting` from parsed options, checked (one UserError per bad value)."""
    try:
        seeds = tuple(int(s) for s in str(args.seeds).split(",") if s.strip())
    except ValueError:
        raise UserError(
            f"--seeds must be integers separated by commas, got {args.seeds!r}"
        ) from None
    require(len(set(seeds)) == len(seeds), f"--seeds repeats a seed: {args.seeds}")
    require(
        len(seeds) >= 2,
        "--seeds needs at least two seeds for a spread (three for the README tables)",
    )
    require(args.epochs >= 1, f"--epochs must be at least 1, got {args.epochs}")
    require(args.iwae_k >= 1, f"--iwae-k must be at least 1, got {args.iwae_k}")
    quick = bool(args.quick)
    out = args.out or (f"runs/experiments/quick/{name}" if quick else f"experiments/results/{name}")
    return Setting(
        name=name,
        dataset=args.dataset,
        seeds=seeds,
        epochs=QUICK_EPOCHS if quick else args.epochs,
        quick=quick,
        out=out,
        cache=args.cache,
        tensorboard=not args.no_tensorboard,
        progress=not args.quiet,
        iwae_k=min(args.iwae_k, 8) if quick else args.iwae_k,
        argv=tuple(sys.argv[1:] if argv is None else argv),
    )


def enable_compilation_cache(cache: str) -> None:
    """JAX's persistent compilation cache under the model cache: the ten one-class
    models of a kind are one program, compiled once; a re-run compiles nothing."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return  # the caller's (the test suite's) cache
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(cache, "jax")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# ------------------------------------------------------------------ data


def save_npz(ds: Dataset, path: str) -> str:
    """Write `ds` as an .npz (atomically; kept when it exists) and return its absolute
    path, so that a training run can name the data it saw."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        arrays = {"x_train": ds.x_train, "x_test": ds.x_test}
        if ds.y_train is not None:
            arrays.update(y_train=ds.y_train, y_test=ds.y_test)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return path


def subset(ds: Dataset, n_train: int, n_test: int) -> Dataset:
    """The first n_train training and n_test test examples."""
    cut = lambda a, n: None if a is None else a[:n]
    return dataclasses.replace(
        ds,
        x_train=ds.x_train[:n_train],
        y_train=cut(ds.y_train, n_train),
        x_test=ds.x_test[:n_test],
        y_test=cut(ds.y_test, n_test),
    )


@dataclasses.dataclass(frozen=True)
class Data:
    """An experiment's data: the arrays and the source name training runs record."""

    dataset: Dataset
    source: str


def load(s: Setting) -> Data:
    """The setting's data set (with --quick, its first QUICK_TRAIN / QUICK_TEST images,
    saved to the cache as an .npz)."""
    ds = load_dataset(s.dataset)
    if not s.quick:
        return Data(ds, s.dataset)
    ds = subset(ds, QUICK_TRAIN, QUICK_TEST)
    stem = os.path.splitext(os.path.basename(s.dataset))[0]
    return Data(ds, save_npz(ds, os.path.join(s.cache, "data", f"{stem}-quick.npz")))


def derived(data: Data, ds: Dataset, tag: str, cache: str) -> Data:
    """`ds` (made from `data`, e.g. one class of it) saved as `<cache>/data/<name>-<tag>.npz`."""
    stem = os.path.splitext(os.path.basename(data.source))[0]
    return Data(ds, save_npz(ds, os.path.join(cache, "data", f"{stem}-{tag}.npz")))


# ------------------------------------------------------------------ training


def run_config(s: Setting, data: Data, model: str, latent_dim: int = 16, options=None,
               epochs: int | None = None, **fields) -> RunConfig:  # fmt: skip
    """The RunConfig of one experiment model: the project's defaults (MLP 400 hidden,
    dynamic binarisation, Adam 1e-3, batch 128) with this latent size and options."""
    from aevae_jax.models import resolve

    # Options completed with the model's defaults, so that {} and {"beta": 4.0} are one
    # configuration (and one cache entry) for the beta-VAE.
    model_cfg = resolve(ModelConfig(name=model, latent_dim=latent_dim, options=dict(options or {})))
    return RunConfig(
        data=DataConfig(dataset=data.source),
        model=model_cfg,
        epochs=epochs or s.epochs,
        tensorboard=s.tensorboard,
        **fields,
    )


def cache_dir(s: Setting, cfg: RunConfig) -> str:
    """Where a config's seeds live: named by model and a digest of everything that
    shapes training (not the seed, output directory or logging)."""
    d = cfg.to_dict()
    for key in ("seed", "out", "tensorboard", "image_every", "checkpoint_every", "keep_best"):
        d.pop(key, None)
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(s.cache, f"{cfg.model.name}-L{cfg.model.latent_dim}-{digest}")


def trained(s: Setting, data: Data, cfg: RunConfig) -> list[FitResult]:
    """Every seed of `cfg` trained (or read back from the cache, or resumed there),
    trained together in one compiled program."""
    out = cache_dir(s, cfg)
    # Only the last epoch is used: one checkpoint per stage's end, no best checkpoint.
    cfg = dataclasses.replace(cfg, out=out, checkpoint_every=cfg.epochs, keep_best=False)
    resume = any(has_run(os.path.join(out, f"seed_{seed}")) for seed in s.seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunWarning)  # a seed added to a cached model
        return fit_seeds(cfg, s.seeds, resume=resume, dataset=data.dataset, progress=s.progress)


# ------------------------------------------------------------------ per-image scores


def inputs(x, binarize: str = "dynamic", split: str = "test") -> jax.Array:
    """Stored images [N, ...] as model input, binarized by the split's fixed draw when
    training binarizes (evaluate.eval_inputs): what every experiment scores."""
    from aevae_jax.evaluate.split import TEST_SPLIT, TRAIN_SPLIT, eval_inputs

    return eval_inputs(jnp.asarray(x), binarize, TEST_SPLIT if split == "test" else TRAIN_SPLIT)


class _ScoreMaps:
    """A model's compiled per-image maps (`evaluate.SplitMap`s), built once per model
    object, so that its seeds and every input set reuse one compiled program per shape."""

    def __init__(self, model):
        def sse(p, xi, yi, i):
            return reconstruction_errors(model, p, single(xi, yi))["mse"][0]

        self.model = model
        self.sse, self.encode = SplitMap(sse), SplitMap(encode_example(model))
        self._bounds: dict[int, SplitMap] = {}

    def bound(self, k: int):
        if k not in self._bounds:
            self._bounds[k] = SplitMap(iwae_bound(self.model, k), 100, block=500)
        return self._bounds[k]


_SCORE_MAPS: dict[int, _ScoreMaps] = {}


def _score_maps(model) -> _ScoreMaps:
    maps = _SCORE_MAPS.get(id(model))
    if maps is None or maps.model is not model:
        maps = _SCORE_MAPS[id(model)] = _ScoreMaps(model)
    return maps


def scores(result: FitResult, x: jax.Array, key: jax.Array | None, iwae_k: int = 0,
           y=None, progress: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-image numbers of a trained model on model inputs x [N, H, W, C]:
    recon_sse (squared error of the reconstruction through the code, summed over
    pixels); where q(z|x) is Gaussian, posterior_var (exp(log_var) averaged over the
    latent dimensions); where the model has a likelihood bound and a key is given,
    neg_elbo (K = 1) and, with iwae_k > 0, nll_iwae (K = iwae_k; 1 for point
    posteriors, where it is exact). The compiled maps are kept per model object."""
    model, params = result.model, result.params
    maps = _score_maps(model)
    data = (x, y)
    out = {"recon_sse": np.asarray(maps.sse(params, data))}
    enc = maps.encode(params, data)
    if enc.log_var is not None:
        var = np.exp(np.asarray(enc.log_var, np.float64)).reshape(len(x), -1)
        out["posterior_var"] = var.mean(1)
    if model.log_importance_weights is not None and key is not None:
        elbo_key, iwae_key = jax.random.split(key)
        out["neg_elbo"] = -np.asarray(maps.bound(1)((params, elbo_key), data))
        if iwae_k:
            k = 1 if model.point_posterior else iwae_k
            out["nll_iwae"] = -np.asarray(
                maps.bound(k)((params, iwae_key), data, desc=f"IWAE K={k}", progress=progress)
            )
    return out


# ------------------------------------------------------------------ statistics


def pm(values, digits: int = 2, scale: float = 1.0) -> str:
    """'mean ± std' of per-seed values (times `scale`, e.g. 100 for percentages)."""
    m, sd = mean_std(np.asarray(values, np.float64) * scale)
    return f"{number(m, digits)} ± {number(sd, digits)}"


def differs(a, b) -> bool:
    """The experiments' verdict rule (verdicts.seed_spread): two models' per-seed values
    differ when |mean(a) - mean(b)| > std(a) + std(b)."""
    return seed_spread(a, b)


def verdict(metric: str, a_name: str, a, b_name: str, b, higher_better: bool,
            digits: int = 2, scale: float = 1.0) -> str:  # fmt: skip
    """One sentence comparing two models on `metric` over seeds: which is better and by
    how much when `differs`, otherwise that there is no measurable difference."""
    a = np.asarray(a, np.float64) * scale
    b = np.asarray(b, np.float64) * scale
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    gap = f"{abs(ma - mb):.{digits}f}"
    spread = f"{sa + sb:.{digits}f}"
    if not differs(a, b):
        return (
            f"{metric}: no measurable difference between {a_name} and {b_name} "
            f"(gap {gap} within the seed spread {spread})."
        )
    a_better = (ma > mb) == higher_better
    win, lose = (a_name, b_name) if a_better else (b_name, a_name)
    return f"{metric}: {win} is better than {lose} by {gap} (seed spread {spread})."


# ------------------------------------------------------------------ results


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(table_lines(header, rows))


class Results:
    """An experiment's tables, numbers, verdicts and figures; `write` puts them in
    `<out>/<name>.md` and `<out>/<name>.json` with the command and its runtime."""

    def __init__(self, s: Setting, title: str, summary: str):
        self.s, self.title, self.summary = s, title, summary
        self.start = time.perf_counter()
        self.sections: list[str] = []
        self.verdicts: list[str] = []
        self.data: dict = {}
        os.makedirs(s.out, exist_ok=True)

    def path(self, filename: str) -> str:
        """Where a figure or other file of this experiment goes."""
        return os.path.join(self.s.out, filename)

    def table(self, title: str, header: list[str], rows: list[list[str]], note: str = ""):
        self.sections.append(f"### {title}\n\n{markdown_table(header, rows)}" +
                             (f"\n\n{note}" if note else ""))  # fmt: skip

    def figure(self, filename: str, caption: str) -> None:
        self.sections.append(f"![{caption}]({filename})\n\n*{caption}*")

    def verdict(self, sentence: str) -> None:
        self.verdicts.append(sentence)

    def write(self) -> dict:
        seconds = time.perf_counter() - self.start
        command = " ".join(["python", f"experiments/{self.s.name}.py", *self.s.argv])
        head = [
            f"## {self.title}",
            "",
            self.summary,
            "",
            f"`{command}`: {seconds / 60:.1f} min on this machine "
            f"({os.cpu_count()} CPU cores, {jax.default_backend()}), "
            f"{self.s.n_seeds} seeds ({', '.join(map(str, self.s.seeds))}) trained together, "
            f"{self.s.epochs} epochs, on {self.s.dataset}"
            + (" (quick: a subset, 1 epoch; the numbers mean nothing)" if self.s.quick else "")
            + ". Values are mean ± standard deviation over seeds.",
        ]
        verdicts = ["### Verdicts", "", *[f"- {v}" for v in self.verdicts]]
        text = "\n\n".join(["\n".join(head), *self.sections, "\n".join(verdicts)]) + "\n"
        with open(self.path(f"{self.s.name}.md"), "w") as f:
            f.write(text)
        record = {
            "experiment": self.s.name,
            "command": command,
            "seconds": seconds,
            "seeds": list(self.s.seeds),
            "epochs": self.s.epochs,
            "dataset": self.s.dataset,
            "quick": self.s.quick,
            "verdicts": self.verdicts,
            **self.data,
        }
        write_json(self.path(f"{self.s.name}.json"), record, indent=1)
        return record


def run(main, argv=None) -> int:
    """Run an experiment's `main(argv)`; a UserError is one line and exit status 2."""
    try:
        main(argv)
    except UserError as e:
        print(f"experiments: error: {e}", file=sys.stderr)
        return 2
    return 0
