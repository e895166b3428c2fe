"""Sampling: the validated `SamplingSettings`, the flow-matching sampler with CFG (`sampler`), the
memory and time planner it asks (`plan`), and per-step latent previews (`preview`).
Uses the model and frames; never files, encoders or data."""
