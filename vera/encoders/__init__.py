"""Encoders: the Wan2.1 VAE and the `FrameCodec` interface (`vae`), and UMT5 text encoding (`text`).
Uses checkpoints (to read weight files) and frames (the frame-count rule); never the model."""
