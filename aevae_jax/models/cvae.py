"""The conditional VAE (Sohn et al. 2015): encoder q(z|x, y) and decoder p(x|z, y) both
see the one-hot class label; the prior is N(0, I) for every class. The loss is the
negative conditional ELBO, -E_q[log p(x|z, y)] + KL(q(z|x, y) || N(0, I)). Samples for
label c decode z ~ N(0, I) with c, so one model draws any class on demand.
"""

from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.vae import gaussian_latent, neg_elbo_loss

CLAIMS = (
    Claim(
        "conditional_sample_accuracy",
        "higher",
        "chance",
        "samples drawn for label c are recognised as class c far above chance (Sohn et al. 2015)",
    ),
)


@register("cvae", needs_density=True, needs_labels=True, claims=CLAIMS)
def make_cvae(cfg, spec, opts) -> Model:
    """Conditional VAE: encoder and decoder conditioned on the class label."""
    del opts
    parts = gaussian_latent(cfg, spec, conditional=True)
    return parts.model("cvae", neg_elbo_loss(parts))
