"""Training: latent caching, the small VAE and text-encoder builders, the Vera trainer (accelerate),
the LoRA option and the recipe that makes vera-tiny (which evaluates what it trains).
Uses every wing except the command line."""
