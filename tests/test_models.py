"""The model protocol, the registry and its options, reparameterisation and the AE/VAE
losses by hand."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL_OPTIONS, elbo_terms_by_hand

from aevae_jax.config import ModelConfig
from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import UserError
from aevae_jax.models import Batch, make_model, model_info, model_names, resolve
from aevae_jax.models.vae import reparameterize

SPEC = DataSpec("test", (28, 28, 1), 10)
TINY = DataSpec("tiny", (4, 4, 1), 3)


def _x(shape=(5, 28, 28, 1), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape)


def _batch(spec, n=5, seed=0, binary=False):
    x = _x((n, *spec.image_shape), seed)
    if binary:
        x = (x > 0.5).astype(jnp.float32)
    y = None if spec.num_classes is None else jnp.arange(n, dtype=jnp.int32) % spec.num_classes
    return Batch(x, y)


ALL = model_names()


def test_registry_lists_models_and_rejects_unknown_names():
    assert set(ALL) <= set(model_names())
    with pytest.raises(UserError, match=r"unknown model 'gan'.*aae, ae"):
        make_model(ModelConfig(name="gan"), SPEC)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "backbone,shape,likelihood",
    # Grey images with each model's own likelihood; colour images on the conv backbone
    # with the discretised logistic (two decoder outputs per sub-pixel). The conv
    # backbone on 28x28 images is trained in test_cli.py.
    [("mlp", (28, 28, 1), None), ("conv", (32, 32, 3), "logistic")],
)
def test_every_model_builds_on_both_backbones(name, backbone, shape, likelihood):
    spec = DataSpec("s", shape, 10)
    cfg = ModelConfig(name=name, backbone=backbone, latent_dim=6, likelihood=likelihood,
                      options=SMALL_OPTIONS.get(name, {}))  # fmt: skip
    model = make_model(cfg, spec)
    batch = _batch(spec, 3)
    params = model.init(jax.random.key(0), batch)
    enc = model.encode(params, batch)
    assert enc.code.shape == (3, *model.code_shape)
    gaussian = ("vae", "dvae", "beta_vae", "iwae", "cvae", "vamp_vae", "two_layer_vae",
                "two_stage_vae", "info_vae", "beta_tc_vae", "factor_vae", "dip_vae_i",
                "dip_vae_ii", "miwae", "ciwae", "piwae", "ladder_vae", "hvae")  # fmt: skip
    assert (enc.log_var is not None) == (name in gaussian)
    assert (enc.indices is not None) == (name in ("vqvae", "fsq", "rq_vae", "gumbel_vae"))
    outputs = (*shape[:-1], shape[-1] * model.likelihood.channels)
    assert model.likelihood.channels == (2 if likelihood == "logistic" else 1)
    assert model.decode(params, enc.code, batch.y).shape == (3, *outputs)
    recon = model.reconstruct(params, batch)
    assert recon.shape == (3, *shape) and float(recon.min()) >= 0 and float(recon.max()) <= 1
    loss, metrics = jax.jit(model.loss)(params, batch, jax.random.key(1), 0)
    assert np.isfinite(float(loss)) and metrics
    if model.sample is not None:
        assert model.sample(params, jax.random.key(2), 4, None).shape == (4, *shape)


def test_pytorch_examples_mlp_has_the_published_layer_sizes():
    model = make_model(ModelConfig(name="vae", hidden=(400,), latent_dim=20), SPEC)
    params = model.init(jax.random.key(0), _batch(SPEC, 1))
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes["encoder"]["Dense_0"]["kernel"] == (784, 400)
    assert shapes["encoder"]["Dense_1"]["kernel"] == (400, 40)  # mean and log-variance heads
    assert shapes["decoder"]["Dense_0"]["kernel"] == (20, 400)
    assert shapes["decoder"]["Dense_1"]["kernel"] == (400, 784)


def test_conv_backbone_rejects_indivisible_images():
    with pytest.raises(UserError, match="divisible by 4"):
        make_model(ModelConfig(name="ae", backbone="conv"), DataSpec("s", (30, 30, 1)))


def test_ae_loss_is_the_articles_mse():
    model = make_model(ModelConfig(name="ae", hidden=(16,), latent_dim=3), TINY)
    batch = _batch(TINY, 6)
    params = model.init(jax.random.key(0), batch)
    loss, _ = model.loss(params, batch, None, 0)
    x_hat = np.asarray(model.reconstruct(params, batch))
    by_hand = np.sum((np.asarray(batch.x) - x_hat) ** 2) / 6  # (1/N) sum_i ||X_i - X_hat_i||^2
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)


def test_vae_loss_is_bernoulli_nll_plus_analytic_kl_by_hand():
    model = make_model(ModelConfig(name="vae", hidden=(16,), latent_dim=3), TINY)
    batch = _batch(TINY, 6, binary=True)
    params = model.init(jax.random.key(0), batch)
    key = jax.random.key(7)
    loss, metrics = model.loss(params, batch, key, 0)
    recon, kl = elbo_terms_by_hand(model, params, batch, key)
    assert float(metrics["recon"]) == pytest.approx(recon.mean(), rel=1e-4)
    assert float(metrics["kl"]) == pytest.approx(kl.mean(), rel=1e-4)
    assert float(loss) == pytest.approx((recon + kl).mean(), rel=1e-4)


@pytest.mark.parametrize("name", ["vae", "beta_vae", "iwae", "cvae"])
def test_density_models_refuse_the_mse_likelihood_before_any_data(name):
    with pytest.raises(UserError, match="normalised likelihood"):
        resolve(ModelConfig(name=name, likelihood="mse"))


def test_reparameterization_gradient_matches_finite_difference():
    key = jax.random.key(3)
    c = jnp.array([0.5, -2.0, 1.5])

    def f(mean, log_var):
        return jnp.sum(c * jnp.sin(reparameterize(key, mean, log_var)))

    mean, log_var = jnp.array([0.1, -0.4, 0.8]), jnp.array([-0.3, 0.2, -1.0])
    g_mean, g_lv = jax.grad(f, argnums=(0, 1))(mean, log_var)
    h = 1e-2
    for i in range(3):
        e = jnp.zeros(3).at[i].set(h)
        fd_mean = (f(mean + e, log_var) - f(mean - e, log_var)) / (2 * h)
        fd_lv = (f(mean, log_var + e) - f(mean, log_var - e)) / (2 * h)
        assert float(g_mean[i]) == pytest.approx(float(fd_mean), rel=2e-3, abs=1e-4)
        assert float(g_lv[i]) == pytest.approx(float(fd_lv), rel=2e-3, abs=1e-4)


def test_reparameterized_gradient_is_unbiased():
    # d/dm E[z^2] = 2m, d/dlv E[z^2] = exp(lv) for z ~ N(m, exp(lv)).
    m, lv = 0.7, math.log(0.5)
    keys = jax.random.split(jax.random.key(0), 200_000)

    def estimate(m, lv):
        z = jax.vmap(lambda k: reparameterize(k, m, lv))(keys)
        return jnp.mean(z**2)

    gm, glv = jax.grad(estimate, argnums=(0, 1))(jnp.float32(m), jnp.float32(lv))
    assert float(gm) == pytest.approx(2 * m, abs=0.01)
    assert float(glv) == pytest.approx(0.5, abs=0.01)


def test_vae_sample_and_importance_weights_shapes():
    model = make_model(ModelConfig(name="vae", hidden=(16,), latent_dim=3), TINY)
    batch = _batch(TINY, 6, binary=True)
    params = model.init(jax.random.key(0), batch)
    s = model.sample(params, jax.random.key(1), 9)
    assert s.shape == (9, 4, 4, 1) and float(s.min()) >= 0 and float(s.max()) <= 1
    w = model.log_importance_weights(params, batch, jax.random.key(2), 11)
    assert w.shape == (11, 6) and bool(jnp.all(jnp.isfinite(w)))
    # E_q[log w] is the ELBO: its Monte-Carlo mean agrees with -loss (sample noise aside).
    w_many = model.log_importance_weights(params, batch, jax.random.key(2), 4000)
    keys = jax.random.split(jax.random.key(5), 4000)
    losses = jax.vmap(lambda k: model.loss(params, batch, k, 0)[0])(keys)
    assert float(jnp.mean(w_many)) == pytest.approx(-float(jnp.mean(losses)), abs=0.1)


def test_ae_has_no_sampler_or_density():
    model = make_model(ModelConfig(name="ae"), SPEC)
    assert model.sample is None and model.log_importance_weights is None


def test_torch_init_draws_pytorchs_uniform_bounds_and_lecun_keeps_zero_bias():
    batch = _batch(SPEC, 2)
    torch_like = make_model(ModelConfig(name="vae", init="torch"), SPEC)
    p = torch_like.init(jax.random.key(0), batch)["encoder"]["Dense_0"]
    bound = 1 / math.sqrt(784)
    kernel, bias = np.asarray(p["kernel"]), np.asarray(p["bias"])
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    assert kernel.var() == pytest.approx(bound**2 / 3, rel=0.02)  # U(-b, b) has variance b^2/3
    assert bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)  # not zero: drawn
    lecun = make_model(ModelConfig(name="vae"), SPEC)
    q = lecun.init(jax.random.key(0), batch)["encoder"]["Dense_0"]
    assert np.all(np.asarray(q["bias"]) == 0)
    assert np.asarray(q["kernel"]).var() == pytest.approx(1 / 784, rel=0.05)
    conv = make_model(ModelConfig(name="ae", backbone="conv", init="torch"), SPEC)
    c = conv.init(jax.random.key(0), batch)["encoder"]["Conv_0"]["kernel"]
    assert np.abs(np.asarray(c)).max() <= 1 / math.sqrt(9 * 1)


def test_names_checked_in_config_match_the_implementations():
    from aevae_jax.config import ACTIVATION_NAMES, LIKELIHOOD_NAMES
    from aevae_jax.nn.backbones import ACTIVATIONS
    from aevae_jax.nn.likelihoods import LIKELIHOODS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)
    assert set(LIKELIHOOD_NAMES) == set(LIKELIHOODS)


# ----------------------------------------------------------------- options


def test_options_are_completed_with_defaults_and_validated():
    cfg = resolve(ModelConfig(name="beta_vae", options={"beta": 2}))
    assert cfg.options["beta"] == 2.0 and isinstance(cfg.options["beta"], float)
    assert cfg.options["kl_schedule"] == "constant" and cfg.likelihood == "bernoulli"
    assert set(cfg.options) == {f.name for f in model_info("beta_vae").option_fields()}
    with pytest.raises(UserError, match="has no option k; its options are beta"):
        resolve(ModelConfig(name="beta_vae", options={"k": 5}))
    with pytest.raises(UserError, match="--beta must be >= 0"):
        resolve(ModelConfig(name="beta_vae", options={"beta": -1.0}))
    with pytest.raises(UserError, match="option k of iwae must be a int"):
        resolve(ModelConfig(name="iwae", options={"k": "five"}))
    with pytest.raises(UserError, match="the vae model has no option beta"):
        resolve(ModelConfig(name="vae", options={"beta": 4.0}))


def test_options_dataclasses_follow_the_registry_rules():
    for name in model_names():
        info = model_info(name)
        for f in info.option_fields():
            assert f.default is not dataclasses.MISSING and f.metadata.get("help"), (name, f.name)


def test_conditional_model_needs_labels():
    with pytest.raises(UserError, match="conditioned on class labels"):
        make_model(ModelConfig(name="cvae"), DataSpec("unlabelled", (28, 28, 1), None))
