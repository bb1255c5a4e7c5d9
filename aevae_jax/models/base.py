"""The model protocol (v2): a frozen bundle of pure functions, shaped like an optax
transformation. The trainer, evaluator, command line and reports read what a model
can do from which fields are set, never from its name.

Shapes: images x [B, H, W, C] float32 in [0, 1]; labels y [B] int32 (or None);
codes [B, *code_shape] float32 (what the decoder takes); decoder outputs are the
likelihood's parameters, [B, H, W, C * likelihood.channels] ("logits"; mean image =
likelihood.mean(logits)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from aevae_jax.data.spec import DataSpec
from aevae_jax.nn.likelihoods import Likelihood, get_likelihood

Params = Any  # a pytree of arrays
Metrics = dict[str, jax.Array]
Loss = Callable[[Params, "Batch", jax.Array, jax.Array], tuple[jax.Array, Metrics]]
OptimizerFactory = Callable[[Any, int], optax.GradientTransformation]  # (OptimConfig, steps)


class Batch(NamedTuple):
    """One batch as the model sees it: preprocessed images, (optional) labels, the
    conditioning input of conditional models, and (optional) pixel visibility.

    mask: [B, H, W, 1], 1 where a pixel is seen and 0 where it is hidden (x is 0 there),
    as in the evaluator's inpainting test; a model that knows masks (the masked AE) uses
    it, the others see the zero-filled image. None: every pixel visible.
    """

    x: jax.Array  # [B, H, W, C] float32 in [0, 1]
    y: jax.Array | None = None  # [B] int32 class labels, where the data set has them
    mask: jax.Array | None = None  # [B, H, W, 1] float32 visibility


class Encoding(NamedTuple):
    """What an encoder says about x.

    code: what the decoder takes [B, *code_shape]: the point code of an AE, the mean
      of a Gaussian q(z|x), or the quantised vectors of a VQ-VAE.
    log_var: the log-variance of a diagonal Gaussian q(z|x) around `code` (None for
      point codes).
    indices: int32 code indices [B, *grid] for discrete codes (None otherwise).
    layers: the stochastic layers above this one, bottom up (a hierarchy such as z2 of a
      two-layer VAE, where q(z1, z2 | x) = q(z1 | x) q(z2 | z1)): each an Encoding of that
      layer's Gaussian at the mean of the layer below. Empty for one stochastic layer.
      The decoder reads `code` (the bottom layer) alone.
    """

    code: jax.Array
    log_var: jax.Array | None = None
    indices: jax.Array | None = None
    layers: tuple[Encoding, ...] = ()

    @property
    def features(self) -> jax.Array:
        """The code as one float vector per example [B, prod(code_shape)] (probe, FD)."""
        return self.code.reshape(self.code.shape[0], -1)


class Prior(NamedTuple):
    """p(z), as the model declares it: what the evaluator's rate, q(z)-to-prior distance
    and prior samples use. z is the model's code [B, *code_shape], or for several stochastic
    layers a tuple of codes, bottom (the decoder's) first.

    log_prob(params, z) -> [B]: log p(z), summed over dimensions (and layers).
    sample(params, key, n, y) -> z: n codes drawn from p(z) (y: labels [n] of a conditional
      model, or None).
    kl(params, encoding) -> [B]: KL(q(z|x) || p(z)) in closed form, where one exists for the
      model's posterior; None: the evaluator estimates it by Monte Carlo from
      `Model.posterior` draws and `log_prob`.
    kl_per_dim(params, encoding) -> [B, L]: the closed-form KL's terms per dimension, where
      it factorises over dimensions (None otherwise).
    moments(params) -> (mean [L], cov [L, L]): the exact mean and covariance of the bottom
      layer's p(z) (None: the evaluator estimates them from samples).
    """

    log_prob: Callable[[Params, Any], jax.Array]
    sample: Callable[..., Any]
    kl: Callable[[Params, Encoding], jax.Array] | None = None
    kl_per_dim: Callable[[Params, Encoding], jax.Array] | None = None
    moments: Callable[[Params], tuple[jax.Array, jax.Array]] | None = None


class Claim(NamedTuple):
    """What the literature says of a model, checked by `aevae compare` from its own
    numbers whenever the model it is compared with was trained alongside.

    metric: a metrics.json key of the model (e.g. "test_nll_iwae");
    better: "lower" or "higher";
    than: another registered model's name, a number, "chance" (1 / classes), or a
      function of the model's metrics giving the number;
    text: the claim in words, with its source;
    applies: a test of the model's options (None: always), e.g. beta > 1.
    """

    metric: str
    better: str
    than: str | float | Callable[[dict], float]
    text: str
    applies: Callable[[dict], bool] | None = None


class Stage(NamedTuple):
    """A training stage after the main one (a VQ-VAE's prior over code indices): its own
    objective and optimiser over the same parameters, for `epochs` more epochs. The
    optimiser must leave the parameters it does not train unchanged (`optim.frozen`)."""

    name: str
    loss: Loss
    optimizer: OptimizerFactory
    epochs: int


@dataclasses.dataclass(frozen=True)
class Model:
    """A model: pure functions of explicit parameters and keys.

    init(key, batch) -> params
    loss(params, batch, key, step) -> (scalar, metrics): the training objective of the
        main stage, a batch mean of per-example sums (see likelihoods.py); metrics are
        its terms, batch means. Evaluation never uses it to report a likelihood.
    encode(params, batch) -> Encoding
    decode(params, code, y) -> logits [B, H, W, C * likelihood.channels]   (y: labels
        [B] or None)
    sample(params, key, n, y) -> images [n, H, W, C] in [0, 1] from the model's own
        prior (y: labels [n] for conditional models; None draws them)
    log_importance_weights(params, batch, key, k) -> [k, B] values of
        log p(x, z_k) - log q(z_k | x), z_k ~ q(z|x), with the true prior and beta = 1
        (where a density is defined). K = 1 is the single-sample ELBO.
    optimizer(optim_cfg, total_steps) -> optax transformation of the main stage (None:
        the run's optimiser for every parameter); see optim.param_groups.
    stages: further training stages, run after the main one.
    conditional: encode, decode and sample need labels.
    num_codes: codebook size, for discrete codes (Encoding.indices).
    point_posterior: q(z|x) is a point mass, so one importance sample gives the exact
        bound and evaluation never draws more.
    prior: the model's own p(z) (`Prior`), which the evaluator's rate (test_kl), distance of
        q(z) to the prior and prior samples use; None for models without one (AEs), whose
        codes are compared with N(0, I).
    posterior(params, batch, key) -> (z, log q(z|x) [B]): one draw from q(z|x) with its
        log-density, for posteriors that `Encoding.code`/`log_var` do not describe alone
        (several stochastic layers: z is then a tuple, bottom first). None: the diagonal
        Gaussian of the Encoding.
    code_report(params, codes, key) -> {name: float}: the model's own numbers about its
        test codes (an Encoding of the whole test split), e.g. a sparse AE's mean
        activation; `key` for any draws it makes.
    top_down_posterior: q(z|x) is inferred top down, so a layer's posterior depends on
        draws of the layers above and `Encoding` (code, log_var) shows each layer along
        the path of their means only: the evaluator draws the distortion from `posterior`
        and does not treat the Encoding as q (no total correlation from it).
    test_loss: the main stage's objective for one image at a time (the per-epoch test
        runs over the test split image by image), where `loss` uses statistics of the
        whole batch (the sparse AE's KL penalty); None: `loss`.
    """

    name: str
    spec: DataSpec
    code_shape: tuple[int, ...]
    likelihood: Likelihood
    init: Callable[[jax.Array, Batch], Params]
    loss: Loss
    encode: Callable[[Params, Batch], Encoding]
    decode: Callable[[Params, jax.Array, jax.Array | None], jax.Array]
    sample: Callable[..., jax.Array] | None = None
    log_importance_weights: Callable[[Params, Batch, jax.Array, int], jax.Array] | None = None
    optimizer: OptimizerFactory | None = None
    stages: tuple[Stage, ...] = ()
    conditional: bool = False
    num_codes: int | None = None
    point_posterior: bool = False
    prior: Prior | None = None
    posterior: Callable[[Params, Batch, jax.Array], tuple[Any, jax.Array]] | None = None
    code_report: Callable[[Params, Encoding, jax.Array], dict] | None = None
    test_loss: Loss | None = None
    top_down_posterior: bool = False

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.spec.image_shape

    @property
    def latent_dim(self) -> int:
        """Size of the flattened code."""
        return math.prod(self.code_shape)

    def reconstruct(self, params: Params, batch: Batch) -> jax.Array:
        """Mean reconstruction through the code (the Gaussian's mean): [B, H, W, C] in [0, 1]."""
        code = self.encode(params, batch).code
        return self.likelihood.mean(self.decode(params, code, batch.y))


class Backbone(NamedTuple):
    """Pure functions over an encoder/decoder pair; params = {"encoder", "decoder"}.
    `cond` is an optional [B, C] float vector (a one-hot label) that both networks
    concatenate to their inputs."""

    init: Callable[[jax.Array, jax.Array, jax.Array | None], Params]
    encoder: Callable[..., jax.Array]  # (params, x, cond=None) -> features [B, encoder_out]
    decoder: Callable[..., jax.Array]  # (params, z, cond=None) -> logits [B, H, W, C * k]


def make_backbone_fns(
    cfg, image_shape: tuple[int, ...], encoder_out: int, code_dim: int | None = None
) -> Backbone:
    """The shared backbone of `cfg` (a ModelConfig) as pure functions; the decoder takes
    codes of `code_dim` (default cfg.latent_dim) and gives the likelihood's outputs,
    [B, H, W, C * likelihood.channels]."""
    from aevae_jax.nn.backbones import make_backbone

    channels = get_likelihood(cfg.likelihood or "bernoulli").channels
    enc, dec = make_backbone(
        cfg.backbone,
        image_shape,
        encoder_out,
        cfg.hidden,
        cfg.activation,
        cfg.conv_channels,
        cfg.init,
        outputs_per_channel=channels,
        dtype=cfg.dtype,
    )
    code_dim = cfg.latent_dim if code_dim is None else code_dim

    def init(key, x, cond=None):
        k_enc, k_dec = jax.random.split(key)
        z = jnp.zeros((x.shape[0], code_dim), x.dtype)
        return {
            "encoder": enc.init(k_enc, x, cond)["params"],
            "decoder": dec.init(k_dec, z, cond)["params"],
        }

    def encoder(params, x, cond=None):
        return enc.apply({"params": params["encoder"]}, x, cond)

    def decoder(params, z, cond=None):
        return dec.apply({"params": params["decoder"]}, z, cond)

    return Backbone(init, encoder, decoder)


def one_hot_labels(y: jax.Array | None, spec: DataSpec) -> jax.Array | None:
    """Labels [B] -> one-hot float32 [B, num_classes] (None stays None)."""
    return None if y is None else jax.nn.one_hot(y, spec.num_classes, dtype=jnp.float32)
