"""PyTorch eager baselines for benchmarks/step_time.py: the project's AE and VAE
architectures, trained step by step as a PyTorch user would write them.

Each step does the project's work: gather the batch from the uint8 training images,
scale and binarize it (a fresh Bernoulli draw), forward, loss, backward and an Adam
update (lr 1e-3). Architectures (PyTorch's default init; the cost is what matters):
- mlp: Flatten, Linear+ReLU per hidden size, Linear to the code; the decoder mirrors it.
- conv: Conv2d 3x3 stride 2 (+ReLU) per channel count, Flatten, the hidden Linear layers
  and the code; the decoder mirrors it with ConvTranspose2d 3x3 stride 2 (padding 1,
  output_padding 1), the same shapes and FLOPs as the JAX side's 'SAME' layers.
Loss: VAE, Bernoulli NLL (BCE with logits) summed over pixels + analytic KL; AE, squared
error of sigmoid(logits) summed over pixels; both averaged over the batch.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np

MODELS = ("ae", "vae")


def import_torch():
    """torch, or None when the optional baseline is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def relu_layers(nn, sizes):
    """Linear + ReLU between each pair of successive sizes."""
    return [m for a, b in itertools.pairwise(sizes) for m in (nn.Linear(a, b), nn.ReLU())]


def make_networks(torch, backbone, image_shape, hidden, latent, code_out, channels):
    """(encoder, decoder) torch modules on NCHW images. Modules are created in the order
    encoder convolutions, encoder Linear layers, decoder Linear layers, decoder
    transposed convolutions (which fixes their initial values under one seed)."""
    nn = torch.nn
    h, w, c = image_shape
    enc = []
    flat_shape = (c, h, w)
    if backbone == "conv":
        for a, b in itertools.pairwise([c, *channels]):
            enc += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU()]
        scale = 2 ** len(channels)
        flat_shape = (channels[-1], h // scale, w // scale)
    flat = math.prod(flat_shape)
    sizes, back = [flat, *hidden], [latent, *reversed(hidden)]
    enc += [nn.Flatten(), *relu_layers(nn, sizes), nn.Linear(sizes[-1], code_out)]
    dec = [*relu_layers(nn, back), nn.Linear(back[-1], flat)]
    if backbone == "conv":
        dec += [nn.ReLU(), nn.Unflatten(1, flat_shape)]
        rev = [*reversed(channels), c]
        for i, (a, b) in enumerate(itertools.pairwise(rev)):
            dec += [nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1)]
            if i < len(rev) - 2:
                dec += [nn.ReLU()]
    else:
        dec += [nn.Unflatten(1, flat_shape)]
    return nn.Sequential(*enc), nn.Sequential(*dec)


def make_torch_step(
    torch, model, backbone, x_train: np.ndarray, batch_size, hidden, latent, channels
):
    """A zero-argument function that runs one training step on a fresh random batch (on
    the GPU when torch sees one; the caller synchronises)."""
    if model not in MODELS:
        return None
    F = torch.nn.functional
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = torch.from_numpy(np.ascontiguousarray(x_train.transpose(0, 3, 1, 2)))  # uint8
    images = images.to(device)
    code_out = 2 * latent if model == "vae" else latent
    enc, dec = make_networks(torch, backbone, x_train.shape[1:], hidden, latent, code_out, channels)
    enc, dec = enc.to(device), dec.to(device)
    params = [*enc.parameters(), *dec.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    n = len(images)

    def loss_fn(x):
        h = enc(x)
        if model == "ae":
            recon = torch.sigmoid(dec(h))
            return ((recon - x) ** 2).sum(dim=(1, 2, 3)).mean()
        mean, log_var = h.chunk(2, dim=1)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        logits = dec(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
        kl = 0.5 * (torch.exp(log_var) + mean**2 - 1.0 - log_var).sum(dim=1)
        return (recon + kl).mean()

    def step():
        idx = torch.randint(n, (batch_size,), device=device)
        x = torch.bernoulli(images[idx].float().div_(255.0))
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step
