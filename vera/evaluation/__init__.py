"""Evaluation: runs the edit path (and the single-branch baseline) over a layered split and scores
it (`evaluate`, `python -m vera eval`); the metrics themselves are frame maths
(`vera.frames.metrics`). Uses the edit path and everything below it; never training."""
