"""Training: latent caching, the VAE and text-encoder builders for small models, and the Vera trainer."""
