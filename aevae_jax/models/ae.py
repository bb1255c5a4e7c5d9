"""The autoencoder: a deterministic code z = f(x), trained on reconstruction.

Default loss is the article's MSE, sum over pixels of (x - x_hat)^2, mean over
the batch, with x_hat = sigmoid(decoder logits). It has no prior, so no `sample`:
evaluation draws from it with samplers that sit outside the model.
"""

from aevae_jax.likelihoods import batch_mean, get_likelihood
from aevae_jax.models import register
from aevae_jax.models.base import Encoding, Model, make_backbone_fns


@register("ae")
def make_ae(cfg, image_shape) -> Model:
    likelihood = get_likelihood(cfg.likelihood or "mse")
    net = make_backbone_fns(cfg, image_shape, encoder_out=cfg.latent_dim)

    def encode(params, x):
        return Encoding(mean=net.encoder(params, x))

    def loss(params, batch, key, step):
        del key, step  # deterministic
        recon = likelihood.nll(net.decoder(params, net.encoder(params, batch.x)), batch.x)
        value = batch_mean(recon)
        return value, {"recon": value}

    return Model(
        name="ae",
        latent_dim=cfg.latent_dim,
        image_shape=image_shape,
        likelihood=likelihood,
        init=net.init,
        loss=loss,
        encode=encode,
        decode=net.decoder,
    )
