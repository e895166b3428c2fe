"""The edit path: a model with its encoders and defaults (`bundle`), `edit()` from source frames to
layers (`pipeline`), the files an edit delivers (`deliverables`) and `python -m vera edit`
(`command`). Uses every wing below it; nothing above (evaluation, training, the command line)."""
