"""The two-stage VAE: its first stage is the VAE, its second stage a VAE on the first
one's codes (its loss by hand, and it alone moves), and its samples come through both."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import build
from scipy.stats import norm

from aevae_jax.config import OptimConfig
from aevae_jax.models.two_stage_vae import gaussian_nll
from aevae_jax.train.stages import plan_stages
from aevae_jax.train.step import make_update


class _RunCfg:
    optim = OptimConfig()
    epochs = 1


def test_gaussian_nll_is_the_isotropic_gaussian_by_hand():
    rng = np.random.default_rng(0)
    z, m = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    got = gaussian_nll(jnp.asarray(z), jnp.asarray(m), jnp.asarray(np.log(0.3)))
    want = -norm.logpdf(z, m, np.sqrt(0.3)).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_first_stage_is_the_vae_and_the_second_moves_alone():
    model, params, batch = build("two_stage_vae", second_hidden=8, second_epochs=2)
    vae, _, _ = build("vae")
    key = jax.random.key(3)
    assert float(model.loss(params, batch, key, 0)[0]) == pytest.approx(
        float(vae.loss(params, batch, key, 0)[0]), rel=1e-6
    )
    plans = plan_stages(model, _RunCfg, steps_per_epoch=10)
    assert [(p.name, p.epochs) for p in plans] == [("main", 1), ("second", 2)]
    moved = lambda a, b: {k: not all(np.array_equal(x, y) for x, y in
                                     zip(jax.tree.leaves(a[k]), jax.tree.leaves(b[k]), strict=True))
                          for k in a}  # fmt: skip
    first = plans[0]
    new = jax.jit(make_update(first.loss, first.tx))(params, first.tx.init(params), batch, key, 0)[
        0
    ]
    assert moved(params, new) == {"encoder": True, "decoder": True, "second": False}
    second = plans[1]
    later = jax.jit(make_update(second.loss, second.tx))(new, second.tx.init(new), batch, key, 1)[0]
    assert moved(new, later) == {"encoder": False, "decoder": False, "second": True}


def test_second_stage_loss_by_hand_and_samples_through_both_decoders():
    model, params, batch = build("two_stage_vae", second_hidden=8)
    key = jax.random.key(4)
    value, metrics = model.stages[0].loss(params, batch, key, 0)
    k_z, k_u = jax.random.split(key)
    q = model.encode(params, batch)
    z = q.code + jnp.exp(0.5 * q.log_var) * jax.random.normal(k_z, q.code.shape)

    def mlp(p, h):  # two ReLU layers and a linear output, by hand
        h = np.asarray(h, np.float64)
        names = sorted(p)
        for i, name in enumerate(names):
            h = h @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(p[name]["bias"])
            h = np.maximum(h, 0) if i < len(names) - 1 else h
        return h

    second = params["second"]
    mean, log_var = np.split(mlp(second["encoder"], z), 2, axis=1)
    u = mean + np.exp(0.5 * log_var) * np.asarray(jax.random.normal(k_u, mean.shape))
    m = mlp(second["decoder"], u)
    gamma = float(np.exp(second["log_gamma"]))
    recon = -norm.logpdf(np.asarray(z, np.float64), m, np.sqrt(gamma)).sum(1)
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(1)
    assert float(value) == pytest.approx(np.mean(recon + kl), rel=1e-4)
    assert float(metrics["gamma"]) == pytest.approx(gamma)
    # Samples: u ~ N(0, I), z = m(u), the first decoder's mean at z.
    u = jax.random.normal(jax.random.key(5), (4, 3))
    z = mlp(second["decoder"], u)
    want = jax.nn.sigmoid(model.decode(params, jnp.asarray(z, jnp.float32)))
    np.testing.assert_allclose(model.sample(params, jax.random.key(5), 4), want, rtol=1e-5,
                               atol=1e-6)  # fmt: skip
