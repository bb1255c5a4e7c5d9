"""The model protocol, registry, reparameterisation and the two losses by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aevae_jax.config import ModelConfig
from aevae_jax.errors import UserError
from aevae_jax.models import Batch, make_model, model_names
from aevae_jax.models.vae import reparameterize


def _x(shape=(5, 28, 28, 1), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape)


def test_registry_lists_models_and_rejects_unknown_names():
    assert {"ae", "vae"} <= set(model_names())
    with pytest.raises(UserError, match=r"unknown model 'gan'.*ae, vae"):
        make_model(ModelConfig(name="gan"), (28, 28, 1))


@pytest.mark.parametrize("name", ["ae", "vae"])
@pytest.mark.parametrize(
    "backbone,shape", [("mlp", (28, 28, 1)), ("conv", (28, 28, 1)), ("conv", (32, 32, 3))]
)
def test_models_build_on_both_backbones(name, backbone, shape):
    model = make_model(ModelConfig(name=name, backbone=backbone, latent_dim=6), shape)
    x = _x((3, *shape))
    params = model.init(jax.random.key(0), x)
    enc = model.encode(params, x)
    assert enc.mean.shape == (3, 6)
    assert (enc.log_var is None) == (name == "ae")
    assert model.decode(params, enc.mean).shape == (3, *shape)
    recon = model.reconstruct(params, x)
    assert recon.shape == (3, *shape) and float(recon.min()) >= 0 and float(recon.max()) <= 1
    loss, metrics = jax.jit(model.loss)(params, Batch(x), jax.random.key(1), 0)
    assert np.isfinite(float(loss)) and "recon" in metrics


def test_pytorch_examples_mlp_has_the_published_layer_sizes():
    model = make_model(ModelConfig(name="vae", hidden=(400,), latent_dim=20), (28, 28, 1))
    params = model.init(jax.random.key(0), _x((1, 28, 28, 1)))
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes["encoder"]["Dense_0"]["kernel"] == (784, 400)
    assert shapes["encoder"]["Dense_1"]["kernel"] == (400, 40)  # mean and log-variance heads
    assert shapes["decoder"]["Dense_0"]["kernel"] == (20, 400)
    assert shapes["decoder"]["Dense_1"]["kernel"] == (400, 784)


def test_conv_backbone_rejects_indivisible_images():
    with pytest.raises(UserError, match="divisible by 4"):
        make_model(ModelConfig(name="ae", backbone="conv"), (30, 30, 1))


def test_ae_loss_is_the_articles_mse():
    model = make_model(ModelConfig(name="ae", hidden=(16,), latent_dim=3), (4, 4, 1))
    x = _x((6, 4, 4, 1))
    params = model.init(jax.random.key(0), x)
    loss, _ = model.loss(params, Batch(x), None, 0)
    x_hat = np.asarray(model.reconstruct(params, x))
    by_hand = np.sum((np.asarray(x) - x_hat) ** 2) / len(x)  # (1/N) sum_i ||X_i - X_hat_i||^2
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)


def test_vae_loss_is_bernoulli_nll_plus_analytic_kl_by_hand():
    model = make_model(ModelConfig(name="vae", hidden=(16,), latent_dim=3), (4, 4, 1))
    x = (_x((6, 4, 4, 1)) > 0.5).astype(jnp.float32)
    params = model.init(jax.random.key(0), x)
    key = jax.random.key(7)
    loss, metrics = model.loss(params, Batch(x), key, 0)

    q = model.encode(params, x)
    mean, log_var = np.asarray(q.mean, np.float64), np.asarray(q.log_var, np.float64)
    eps = np.asarray(jax.random.normal(key, q.mean.shape), np.float64)
    z = mean + np.exp(0.5 * log_var) * eps
    logits = np.asarray(model.decode(params, jnp.asarray(z, jnp.float32)), np.float64)
    p = 1 / (1 + np.exp(-logits))
    xn = np.asarray(x, np.float64)
    bce = -(xn * np.log(p) + (1 - xn) * np.log(1 - p)).reshape(6, -1).sum(1)
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(1)
    assert float(metrics["recon"]) == pytest.approx(bce.mean(), rel=1e-4)
    assert float(metrics["kl"]) == pytest.approx(kl.mean(), rel=1e-4)
    assert float(loss) == pytest.approx((bce + kl).mean(), rel=1e-4)


def test_vae_refuses_mse_likelihood():
    with pytest.raises(UserError, match="normalised likelihood"):
        make_model(ModelConfig(name="vae", likelihood="mse"), (28, 28, 1))


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
    model = make_model(ModelConfig(name="vae", hidden=(16,), latent_dim=3), (4, 4, 1))
    x = (_x((6, 4, 4, 1)) > 0.5).astype(jnp.float32)
    params = model.init(jax.random.key(0), x)
    s = model.sample(params, jax.random.key(1), 9)
    assert s.shape == (9, 4, 4, 1) and float(s.min()) >= 0 and float(s.max()) <= 1
    w = model.log_importance_weights(params, x, jax.random.key(2), 11)
    assert w.shape == (11, 6) and bool(jnp.all(jnp.isfinite(w)))
    # E_q[log w] is the ELBO: its Monte-Carlo mean agrees with -loss (sample noise aside).
    w_many = model.log_importance_weights(params, x, jax.random.key(2), 4000)
    keys = jax.random.split(jax.random.key(5), 4000)
    losses = jax.vmap(lambda k: model.loss(params, Batch(x), k, 0)[0])(keys)
    assert float(jnp.mean(w_many)) == pytest.approx(-float(jnp.mean(losses)), abs=0.1)


def test_ae_has_no_sampler_or_density():
    model = make_model(ModelConfig(name="ae"), (28, 28, 1))
    assert model.sample is None and model.log_importance_weights is None


def test_torch_init_draws_pytorchs_uniform_bounds_and_lecun_keeps_zero_bias():
    x = _x((2, 28, 28, 1))
    torch_like = make_model(ModelConfig(name="vae", init="torch"), (28, 28, 1))
    p = torch_like.init(jax.random.key(0), x)["encoder"]["Dense_0"]
    bound = 1 / math.sqrt(784)
    kernel, bias = np.asarray(p["kernel"]), np.asarray(p["bias"])
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    assert kernel.var() == pytest.approx(bound**2 / 3, rel=0.02)  # U(-b, b) has variance b^2/3
    assert bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)  # not zero: drawn
    lecun = make_model(ModelConfig(name="vae"), (28, 28, 1))
    q = lecun.init(jax.random.key(0), x)["encoder"]["Dense_0"]
    assert np.all(np.asarray(q["bias"]) == 0)
    assert np.asarray(q["kernel"]).var() == pytest.approx(1 / 784, rel=0.05)
    conv = make_model(ModelConfig(name="ae", backbone="conv", init="torch"), (28, 28, 1))
    c = conv.init(jax.random.key(0), x)["encoder"]["Conv_0"]["kernel"]
    assert np.abs(np.asarray(c)).max() <= 1 / math.sqrt(9 * 1)


def test_names_checked_in_config_match_the_implementations():
    from aevae_jax.config import ACTIVATION_NAMES, LIKELIHOOD_NAMES
    from aevae_jax.likelihoods import LIKELIHOODS
    from aevae_jax.nets import ACTIVATIONS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)
    assert set(LIKELIHOOD_NAMES) == set(LIKELIHOODS)
