"""Layered video data: the sample format on disk and its validating loader (`layout`), the
synthetic builder (`synthetic`) and the real background clips (`clips`). Uses frames, media and
the model's branch names; never checkpoints, encoders or sampling."""
from .layout import (  # noqa: F401
    TASKS,
    LayeredSample,
    SampleError,
    load_manifest,
    load_sample,
    write_sample,
)
