"""Building blocks: backbones, conv layers, likelihoods, corruptions and optimisers."""
