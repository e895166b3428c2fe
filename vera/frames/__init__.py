"""Frames: pure maths on decoded frames `[T, H, W, C]`: the frame-count and size grid (`geometry`),
compositing the layers (`layers`, eq. 2 / eq. 3) and measuring frames against each other
(`metrics`). Ground floor: torch and kornia only, nothing else of vera."""
