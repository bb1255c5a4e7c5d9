"""The metric catalogue: every number the evaluator and the comparison report, stated once.

An entry says what a metrics.json key means (label, unit), which way is better, where its
per-test-image values live (for paired comparisons), which metric group computes it (the
capability the model needs: see groups.py), how many digits it is shown with, and whether
it is a column of the all-models table. The evaluation, `aevae compare`, the report, the
zoo and the experiments read it from here.

Latent metrics name the layer they read. With several stochastic layers, a metric of
layer j > 1 has the key of its layer-1 entry with the suffix `_z<j>` (`active_units_z2`);
`entry` resolves such keys.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Metric(NamedTuple):
    """One reported number.

    key: its metrics.json key; label: how sentences name it; unit: "nats", "dB", ...;
    better: "lower", "higher", or None for descriptive numbers; per_image: its key in
    `Evaluation.per_image` (None: a split-level number); group: the metric group that
    computes it (groups.py), or "study" for numbers of the comparison (timing, size);
    "experiment" for numbers only experiments/ compute;
    digits: decimals shown; header: its column in the all-models table (None: none);
    compared: differences between models get an interval and a verdict; layer: which
    code it reads ("z1": the decoder's, the bottom layer), None for non-latent metrics.
    """

    key: str
    label: str
    unit: str
    better: str | None
    per_image: str | None
    group: str
    digits: int = 2
    header: str | None = None
    compared: bool = False
    layer: str | None = None


_M = Metric
# The samplers whose samples are scored (`<sampler>_sample_fd`, ..._precision, ..._recall;
# evaluate/samplers.py draws them), and how reports name them.
SAMPLERS = {"prior": "prior", "expost": "ex-post Gaussian", "gmm": "ex-post Gaussian-mixture",
            "flow": "ex-post flow"}  # fmt: skip
# In the order of the all-models table's columns; other entries after them.
CATALOGUE: tuple[Metric, ...] = (
    _M("test_mse", "test MSE (sum over pixels)", "squared error", "lower", "mse",
       "reconstruction", 2, "MSE", True),
    _M("test_psnr", "PSNR (dB)", "dB", "higher", "psnr", "reconstruction", 2, "PSNR dB", True),
    _M("test_denoise_mse", "denoising MSE (20% salt-and-pepper)", "squared error", "lower",
       "denoise_mse", "reconstruction", 2, "denoise MSE", True),
    _M("test_inpaint_mse", "MSE on hidden pixels (half of the 4x4 patches hidden)",
       "squared error", "lower", "inpaint_mse", "reconstruction", 2, "inpaint MSE", True),
    _M("test_neg_elbo", "test -ELBO (K = 1)", "nats", "lower", "neg_elbo", "likelihood", 2,
       "-ELBO", True),
    _M("test_nll_iwae", "test NLL (IWAE)", "nats", "lower", "nll_iwae", "likelihood", 2,
       "NLL (IWAE)", True),
    _M("test_bpd_iwae", "bits per dimension (IWAE)", "bits/dim", "lower", None, "likelihood",
       3, "bits/dim"),
    _M("test_kl", "rate KL(q(z|x) || p(z)) against the model's prior", "nats", "lower", "kl",
       "gaussian_codes", 2, "KL", True, "z1 and above"),
    _M("active_units", "active units (Cov_x E[z|x] > 0.01)", "units", None, None,
       "gaussian_codes", 0, "active units", layer="z1"),
    _M("probe_accuracy", "linear-probe accuracy", "fraction", "higher", None, "probe", 3,
       "probe acc.", True, "z1"),
    _M("prior_sample_fd", "prior-sample domain FD", "FD", "lower", None, "samples", 2,
       "prior FD", True),
    _M("expost_sample_fd", "ex-post sample domain FD", "FD", "lower", None, "samples", 2,
       "ex-post FD", True),
    _M("latent_prior_fd", "Frechet distance of q(z) to the prior (N(0, I) for models without "
       "one)", "FD", "lower", None, "code_distribution", 2, "q(z) FD to prior", True, "z1"),
    _M("perplexity", "codebook perplexity", "codes", "higher", None, "codebook", 1,
       "perplexity"),
    _M("dead_codes", "codes never used", "codes", "lower", None, "codebook", 0, "dead codes"),
    _M("code_sparsity", "code sparsity (mean Hoyer measure)", "fraction", "higher",
       "code_sparsity", "code_distribution", 3, "sparsity", True, "z1"),
    _M("conditional_sample_accuracy", "accuracy of class-conditional samples", "fraction",
       "higher", None, "samples", 3, "cond. sample acc."),
    _M("step_ms", "train step time", "ms", "lower", None, "study", 3, "step ms"),
    _M("parameters", "parameters", "count", None, None, "study", 0, "parameters"),
    # Not columns of the table.
    _M("test_recon_nll", "reconstruction NLL through the code", "nats", "lower", "recon_nll",
       "reconstruction", 2, compared=True),
    _M("test_bce", "Bernoulli cross-entropy through the code", "nats", "lower", "bce",
       "reconstruction"),
    _M("test_distortion", "distortion E_q[-log p(x|z)]", "nats", "lower", "distortion",
       "gaussian_codes", 2, compared=True, layer="z1"),
    _M("elbo_gap", "-ELBO minus (distortion + KL): zero within noise when the KL is the rate",
       "nats", None, None, "likelihood"),
    _M("test_inference_gap", "inference gap (-ELBO minus the IWAE NLL)", "nats", "lower",
       "inference_gap", "likelihood", 2, compared=True),
    _M("test_bpd", "bits per dimension (-ELBO)", "bits/dim", "lower", None, "likelihood", 3),
    _M("iwae_k", "importance samples of the NLL", "samples", None, None, "likelihood", 0),
    _M("test_total_correlation", "total correlation of q(z) (the mixture of the test "
       "posteriors)", "nats", "lower", "total_correlation", "gaussian_codes", 2,
       compared=True, layer="z1"),
    _M("kl_per_dim", "KL per latent dimension", "nats", None, None, "gaussian_codes",
       layer="z1"),
    _M("posterior_std_mean", "mean posterior standard deviation", "std", None, None,
       "gaussian_codes", 3, layer="z1"),
    _M("posterior_std_active", "mean posterior standard deviation in active dimensions",
       "std", None, None, "gaussian_codes", 3, layer="z1"),
    _M("latent_prior_fd_se", "bootstrap s.e. of latent_prior_fd", "FD", None, None,
       "code_distribution", layer="z1"),
    _M("num_codes", "codebook size", "codes", None, None, "codebook", 0),
    _M("probe_n", "test images of the probe", "images", None, None, "probe", 0),
    _M("prior_sample_fd_se", "bootstrap s.e. of prior_sample_fd", "FD", None, None, "samples"),
    _M("expost_sample_fd_se", "bootstrap s.e. of expost_sample_fd", "FD", None, None,
       "samples"),
    _M("conditional_sample_n", "class-conditional samples", "images", None, None, "samples", 0),
    _M("gmm_sample_fd", "ex-post Gaussian-mixture sample domain FD", "FD", "lower", None,
       "samples", 2, compared=True),
    _M("gmm_sample_fd_se", "bootstrap s.e. of gmm_sample_fd", "FD", None, None, "samples"),
    _M("flow_sample_fd", "ex-post flow sample domain FD", "FD", "lower", None, "samples", 2,
       compared=True),
    _M("flow_sample_fd_se", "bootstrap s.e. of flow_sample_fd", "FD", None, None, "samples"),
    *(_M(f"{s}_sample_{what}", f"{what} of the {words} samples (k = 3 neighbours)",
         "fraction", "higher", None, "samples", 3)
      for s, words in SAMPLERS.items() for what in ("precision", "recall")),
    # Against known generative factors (a data set with factors_test: sprites).
    _M("mig", "mutual information gap (MIG)", "fraction", "higher", None, "disentanglement",
       3, compared=True, layer="z1"),
    _M("sap", "separated attribute predictability (SAP)", "fraction", "higher", None,
       "disentanglement", 3, compared=True, layer="z1"),
    _M("dci_disentanglement", "DCI disentanglement", "fraction", "higher", None,
       "disentanglement", 3, compared=True, layer="z1"),
    _M("dci_completeness", "DCI completeness", "fraction", "higher", None, "disentanglement",
       3, compared=True, layer="z1"),
    _M("dci_informativeness", "DCI informativeness (held-out R^2 of a linear fit)",
       "fraction", "higher", None, "disentanglement", 3, compared=True, layer="z1"),
    _M("factorvae_score", "FactorVAE score (majority-vote accuracy)", "fraction", "higher",
       None, "disentanglement", 3, compared=True, layer="z1"),
    _M("mig_per_factor", "MIG of each factor", "fraction", None, None, "disentanglement",
       layer="z1"),
    # Numbers that experiments/ compute with the library's metric functions.
    _M("knn_accuracy", "kNN (k = 5) accuracy of the codes", "fraction", "higher", None,
       "experiment", 3, layer="z1"),
)  # fmt: skip

BY_KEY = {m.key: m for m in CATALOGUE}
_LAYER = re.compile(r"^(?P<base>.+)_z(?P<j>[2-9]\d*)$")


def entry(key: str) -> Metric | None:
    """The catalogue entry of a metrics.json key (None: not a catalogued metric, e.g. a
    model's own `code_report` number); `<key>_z<j>` is layer j's version of a latent one."""
    if key in BY_KEY:
        return BY_KEY[key]
    m = _LAYER.match(key)
    base = BY_KEY.get(m["base"]) if m else None
    if base is None or base.layer is None:
        return None
    return base._replace(key=key, label=f"{base.label}, layer z{m['j']}", layer=f"z{m['j']}",
                         per_image=None, header=None, compared=False)  # fmt: skip


def label(key: str) -> str:
    """How sentences name a metric (its key when it is not catalogued)."""
    e = entry(key)
    return key if e is None else e.label


def lower_is_better(key: str) -> bool:
    e = entry(key)
    return e is None or e.better != "higher"


def columns() -> list[Metric]:
    """The all-models table's columns, in order."""
    return [m for m in CATALOGUE if m.header is not None]


def compared() -> list[Metric]:
    """The metrics whose differences between models get an interval and a verdict."""
    return [m for m in CATALOGUE if m.compared]


def per_image_key(key: str) -> str | None:
    e = entry(key)
    return None if e is None else e.per_image
