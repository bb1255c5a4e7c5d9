"""The autoencoder: a deterministic code z = f(x), trained on reconstruction.

Default loss is the article's MSE, sum over pixels of (x - x_hat)^2, mean over
the batch, with x_hat = sigmoid(decoder logits). It has no prior, so no `sample`:
evaluation draws from it with samplers that sit outside the model.
"""

from aevae_jax.likelihoods import batch_mean, get_likelihood
from aevae_jax.models import register
from aevae_jax.models.base import Encoding, Model, make_backbone_fns


@register("ae", likelihood="mse")
def make_ae(cfg, spec, opts) -> Model:
    """Autoencoder: a deterministic code trained on reconstruction (MSE)."""
    del opts
    likelihood = get_likelihood(cfg.likelihood)
    net = make_backbone_fns(cfg, spec.image_shape, encoder_out=cfg.latent_dim)

    def encode(params, batch):
        return Encoding(net.encoder(params, batch.x))

    def decode(params, code, y=None):
        return net.decoder(params, code)

    def loss(params, batch, key, step):
        del key, step  # deterministic
        recon = likelihood.nll(decode(params, encode(params, batch).code), batch.x)
        value = batch_mean(recon)
        return value, {"recon": value}

    return Model(
        name="ae",
        spec=spec,
        code_shape=(cfg.latent_dim,),
        likelihood=likelihood,
        init=lambda key, batch: net.init(key, batch.x),
        loss=loss,
        encode=encode,
        decode=decode,
    )
