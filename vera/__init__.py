"""Vera: layered video editing (edit layer + alpha matte + composite) on Wan2.1. No ComfyUI imports here."""

__version__ = "0.1.0"
