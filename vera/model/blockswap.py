"""Block swap: keep some layers' weights in (pinned) CPU memory and bring each onto the device just
before it runs, one layer ahead, on a side stream; for GPUs too small for the whole model.

    swap = BlockSwap(model, swap_layers=10, device="cuda")   # the last 10 of 30 layers swapped
    model(...)                                               # outputs equal the all-resident model

A layer here is the three branches' blocks at one depth (they run together, joint attention). The
swapped layers are the last ones; while layer i runs, the next swapped layer is copied in, and a
swapped layer's device copy is dropped as soon as it has run. On the CPU the "copy" is the tensor
itself (nothing to move), so the schedule costs nothing there; `moves` counts it either way.
"""
from __future__ import annotations

from collections import Counter

import torch

from .config import BRANCHES


class BlockSwap:
    """Installs itself as `model.layer_hook` (see `VeraModel.forward`); `remove()` undoes it."""

    def __init__(self, model, swap_layers: int, device):
        layers = model.config.num_layers
        if not 0 <= swap_layers <= layers:
            raise ValueError(f"swap_layers {swap_layers}: must be from 0 to {layers} (the model's "
                             "layers)")
        self.model, self.device = model, torch.device(device)
        self.swapped = list(range(layers - swap_layers, layers))
        self.slots = {i: self._slots(i) for i in self.swapped}
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.moves: Counter = Counter()
        self.inflight: dict[int, tuple[list[torch.Tensor], object]] = {}
        swapped_ids = {id(t) for i in self.swapped for t in self._tensors(i)}
        with torch.no_grad():
            for module in model.modules():  # everything else lives on the device
                for store in (module._parameters, module._buffers):
                    for name, tensor in store.items():
                        if tensor is None or id(tensor) in swapped_ids:
                            continue
                        _set(store, name, tensor.to(self.device))
            self.host = {i: [_host(t, cuda) for t in self._tensors(i)] for i in self.swapped}
            for i in self.swapped:
                self._assign(i, self.host[i])
        model.layer_hook = self

    def _slots(self, layer: int) -> list[tuple[dict, str]]:
        """(the dict that holds it, its name) for every tensor of one layer's three blocks."""
        slots = []
        for branch in BRANCHES:
            for module in self.model.branches[branch].blocks[layer].modules():
                for store in (module._parameters, module._buffers):
                    slots += [(store, name) for name, t in store.items() if t is not None]
        return slots

    def _tensors(self, layer: int) -> list[torch.Tensor]:
        return [store[name] for store, name in self.slots[layer]]

    def _assign(self, layer: int, tensors: list[torch.Tensor]) -> None:
        for (store, name), tensor in zip(self.slots[layer], tensors):
            _set(store, name, tensor)

    def _fetch(self, layer: int) -> None:
        """Start copying a swapped layer in (once per forward)."""
        if layer not in self.slots or layer in self.inflight:
            return
        self.moves[layer] += 1
        if self.stream is None:
            self.inflight[layer] = (self.host[layer], None)
            return
        with torch.cuda.stream(self.stream):
            copies = [t.to(self.device, non_blocking=True) for t in self.host[layer]]
            event = self.stream.record_event()
        self.inflight[layer] = (copies, event)

    def before(self, layer: int) -> None:
        if layer in self.slots:
            self._fetch(layer)
            copies, event = self.inflight[layer]
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
            self._assign(layer, copies)
        following = next((i for i in self.swapped if i > layer), None)
        if following is not None:
            self._fetch(following)

    def after(self, layer: int) -> None:
        if layer not in self.slots:
            return
        copies, event = self.inflight.pop(layer)
        if event is not None:  # the compute stream may still read them: keep them until it has
            for tensor in copies:
                tensor.record_stream(torch.cuda.current_stream(self.device))
        self._assign(layer, self.host[layer])

    def remove(self) -> None:
        self.model.layer_hook = None


def _host(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    cpu = tensor.detach().to("cpu")
    return cpu.pin_memory() if pin else cpu


def _set(store: dict, name: str, tensor: torch.Tensor) -> None:
    """Put a tensor in a module's parameter or buffer slot, keeping a Parameter a Parameter."""
    current = store[name]
    if isinstance(current, torch.nn.Parameter):
        current.data = tensor
    else:
        store[name] = tensor
