"""FLOPs per sample of a model on a real batch, counted by `torch.utils.flop_counter` (matmuls, attention,
convolutions; embedding lookups and elementwise work are not counted), not estimated by hand."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def flops_per_sample(model, batch, train: bool) -> float:
    """Training (forward, loss and backward, in training mode: every loop pass, dropout on) or inference
    (forward in eval mode) FLOPs of `batch`, divided by its rows. The model's weights are not changed; its
    gradients are cleared afterwards."""
    was_training = model.training
    model.train(train)
    try:
        with FlopCounterMode(display=False) as counter:
            if train:
                outputs = model(batch)
                model.loss(outputs, batch.label)[0].backward()
            else:
                with torch.no_grad():
                    model(batch)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return counter.get_total_flops() / batch.size
