"""FLOPs per sample of a model on a real batch, counted by `torch.utils.flop_counter` (matmuls, attention,
convolutions; embedding lookups and elementwise work are not counted), not estimated by hand.

torch 2.13's counter has no formula for the CPU attention kernel (`_scaled_dot_product_flash_attention_for_cpu`
and its backward, which `F.scaled_dot_product_attention` runs on CPU, with or without a mask): it counts them as
0, so attention would be missing from every Transformer's count on CPU. `counting()` adds them with the
counter's own SDPA formulas (4 b h Lq Lk d forward; the backward's 2.5x)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


CPU_ATTENTION = {_aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
                 _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward}


def counting() -> FlopCounterMode:
    """A FlopCounterMode that also counts the CPU attention kernels."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)


def flops_per_sample(model, batch, train: bool) -> float:
    """Training (forward, loss and backward, in training mode: every loop pass, dropout on) or inference
    (forward in eval mode) FLOPs of `batch`, divided by its rows. The model's weights are not changed; its
    gradients are cleared afterwards."""
    was_training = model.training
    model.train(train)
    try:
        with counting() as counter:
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
