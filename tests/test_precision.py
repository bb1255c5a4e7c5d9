"""Mixed precision: --dtype bfloat16 computes the networks in bfloat16 while parameters,
optimiser state, network outputs, losses and log-densities stay float32."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aevae_jax.config import ModelConfig
from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import UserError
from aevae_jax.models import Batch, make_model
from aevae_jax.train.fit import fit
from tests.test_train import small_cfg

SPEC = DataSpec("fmnist-like", (28, 28, 1), 10)


def dot_dtypes(fn, *args) -> set:
    """The operand dtypes of every matrix product in fn's jaxpr (nested ones included)."""
    found = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.update(str(v.aval.dtype) for v in eqn.invars)
            for param in eqn.params.values():
                for sub in param if isinstance(param, list | tuple) else [param]:
                    if hasattr(sub, "eqns"):  # a Jaxpr
                        walk(sub)
                    elif hasattr(sub, "jaxpr"):  # a ClosedJaxpr
                        walk(sub.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_around_it(backbone):
    cfg32 = ModelConfig(name="vae", backbone=backbone, hidden=(64,), latent_dim=8)
    cfg16 = dataclasses.replace(cfg32, dtype="bfloat16")
    m32, m16 = make_model(cfg32, SPEC), make_model(cfg16, SPEC)
    x = (jax.random.uniform(jax.random.key(0), (16, 28, 28, 1)) > 0.5).astype(jnp.float32)
    batch = Batch(x, None)
    params = m16.init(jax.random.key(1), batch)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
    # The same parameter tree as float32's, so checkpoints move between the two.
    ref = m32.init(jax.random.key(1), batch)
    assert jax.tree.structure(params) == jax.tree.structure(ref)
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, ref)
    assert all(jax.tree.leaves(same))

    key = jax.random.key(2)
    loss16 = lambda p: m16.loss(p, batch, key, 0)[0]
    loss32 = lambda p: m32.loss(p, batch, key, 0)[0]
    assert dot_dtypes(loss16, params) == {"bfloat16"}
    assert dot_dtypes(loss32, params) == {"float32"}
    out = jax.eval_shape(
        lambda p: (m16.encode(p, batch), m16.decode(p, jnp.zeros((16, 8)))), params
    )
    assert {a.dtype for a in jax.tree.leaves(out)} == {jnp.dtype(jnp.float32)}
    if backbone == "conv":
        return  # the values: on the MLP (compiling the conv gradient at -O0 costs 10 s)
    v16, g16 = jax.value_and_grad(loss16)(params)
    v32 = loss32(params)
    assert v16.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))
    # bfloat16 keeps 8 bits of mantissa: the loss (~550 nats) agrees to about 1%.
    np.testing.assert_allclose(v16, v32, rtol=2e-2)


def test_bfloat16_training_keeps_float32_state(small_data, tmp_path):
    model = ModelConfig(name="vae", hidden=(64,), latent_dim=8, dtype="bfloat16")
    result = fit(small_cfg(tmp_path / "bf16", model=model), dataset=small_data, progress=False)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(result.params))
    rows = result.history
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"] and np.isfinite(rows[-1]["step_ms"])


def test_unknown_dtype_is_refused():
    with pytest.raises(UserError, match="dtype must be one of float32, bfloat16"):
        ModelConfig(dtype="float16")
