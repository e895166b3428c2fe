"""The model: Vera's Mixture-of-Transformers (`mot`), its sizes (`config`), attention backends,
fp8 weights, the weight-dtype policy (`precision`), block swap, and one Wan DiT alone (`single`).
Ground floor: torch (and xformers on CUDA) only, nothing else of vera."""
