"""The conv backbone's two implementations against flax.linen.Conv / ConvTranspose:
the same parameters, outputs and gradients, on the backbone's shapes and odd ones."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aevae_jax.errors import UserError
from aevae_jax.nn import conv
from aevae_jax.nn.backbones import make_backbone

# (H, W, C_in, features): the 28x28 and 32x32 backbones' layer shapes (fewer
# channels), and odd sizes.
SHAPES = [(28, 28, 1, 8), (32, 32, 3, 6), (7, 5, 2, 3)]
LAYERS = [(conv.Conv, nn.Conv), (conv.ConvTranspose, nn.ConvTranspose)]


def flax_layer(kind, features):
    return kind(features, (3, 3), strides=(2, 2), padding="SAME")


def perturbed(params, key):
    """Parameters with a non-zero bias (Flax initialises it to zero)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return tree.unflatten(
        [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    )


@pytest.mark.parametrize("ours, theirs", LAYERS, ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_im2col_equals_flax_outputs_and_gradients(ours, theirs, shape):
    h, w, c, f = shape
    x = jax.random.normal(jax.random.key(0), (3, h, w, c))
    ref = flax_layer(theirs, f)
    params = jax.jit(ref.init)(jax.random.key(1), x)
    # Same parameter tree, shapes and initial values as Flax's layer.
    mine = jax.jit(ours(f, "im2col").init)(jax.random.key(1), x)
    jax.tree.map(np.testing.assert_array_equal, mine, params)
    params = perturbed(params, jax.random.key(2))
    # 'xla' is the very lax call of Flax's layer; the backbone test below covers it.
    want, want_grads = outputs_and_gradients(ref, params, x)
    got, grads = outputs_and_gradients(ours(f, "im2col"), params, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    jax.tree.map(close, grads, want_grads)


def outputs_and_gradients(layer, params, x):
    """The layer's output, and the gradients of sum(sin(output)) by parameters and input,
    in one compiled call."""
    loss = lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)))
    run = jax.jit(lambda p, x: (layer.apply(p, x), jax.grad(loss, argnums=(0, 1))(p, x)))
    return run(params, x)


def test_transposed_convolution_taps_by_hand():
    # 1-D view: output 2m takes x[m-1] w0 + x[m] w2, output 2m + 1 takes x[m] w1.
    x = jnp.arange(1.0, 4.0).reshape(1, 3, 1, 1)  # a 3x1 column, one channel
    k = jnp.zeros((3, 3, 1, 1)).at[:, 1, 0, 0].set(jnp.array([10.0, 100.0, 1000.0]))
    # Only the kernel's middle column (tap 1) is non-zero, and it feeds only odd output
    # columns: output column 0 is zero and column 1 holds the 1-D transposed convolution.
    out = conv.conv_transpose_im2col(x, k)[0, :, :, 0]
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_allclose(out[:, 1], [1000, 100, 10 + 2000, 200, 20 + 3000, 300])


def test_backbones_agree_across_implementations_on_the_same_parameters():
    # The 32x32x3 backbone with two outputs per sub-pixel (the discretised logistic).
    image_shape, per_channel = (32, 32, 3), 2
    x = jax.random.uniform(jax.random.key(0), (4, *image_shape))
    nets = {
        impl: make_backbone(
            "conv", image_shape, 10, (32,), "relu", (8, 16), "lecun", per_channel, impl
        )
        for impl in ("im2col", "xla")
    }
    enc_params = jax.jit(nets["xla"][0].init)(jax.random.key(1), x)
    z = jax.random.normal(jax.random.key(2), (4, 5))
    dec_params = jax.jit(nets["xla"][1].init)(jax.random.key(3), z)
    outs = {
        impl: jax.jit(
            lambda x, z, enc=enc, dec=dec: (enc.apply(enc_params, x), dec.apply(dec_params, z))
        )(x, z)
        for impl, (enc, dec) in nets.items()
    }
    assert outs["im2col"][1].shape == (4, *image_shape[:2], image_shape[2] * per_channel)
    for a, b in zip(outs["im2col"], outs["xla"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU rule")
def test_auto_takes_im2col_on_cpu_and_the_environment_overrides(monkeypatch):
    monkeypatch.delenv(conv.ENV_VAR, raising=False)
    assert conv.resolve_impl("auto") == "im2col"
    assert conv.resolve_impl("xla") == "xla"
    monkeypatch.setenv(conv.ENV_VAR, "xla")
    assert conv.resolve_impl("auto") == "xla"
    monkeypatch.setenv(conv.ENV_VAR, "auto")
    assert conv.resolve_impl("auto") == "im2col"
    monkeypatch.setenv(conv.ENV_VAR, "cudnn")
    with pytest.raises(UserError, match="AEVAE_CONV_IMPL='cudnn' is not a conv implementation"):
        conv.resolve_impl("auto")
