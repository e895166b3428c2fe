"""Layered video data: the on-disk sample format, its validating loader, and the synthetic builder."""
from .layout import TASKS, LayeredSample, SampleError, load_manifest, load_sample, write_sample  # noqa: F401
