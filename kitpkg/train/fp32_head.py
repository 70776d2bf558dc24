"""The classifier head in fp32 under mixed precision.

Under `bf16-mixed` a Linear head returns bf16 logits: 8 significant bits, so an 11k-sample fold had 391 distinct
scores, which coarsens AUC ties, rank blends and pseudo-label thresholds. The head is a few thousand multiply-adds, so
it runs with autocast off on fp32 inputs. The module keeps its class's parameters and state_dict names (its class is
swapped for a subclass whose forward does that), so checkpoints written before load unchanged.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, ContextManager

import torch
from torch import nn


def autocast_off(device_type: str) -> ContextManager[Any]:
    """A context with autocast disabled on `device_type` (nothing to disable where autocast does not exist)."""
    if not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


class _Fp32Forward:
    """Mixin: forward on fp32 inputs with autocast off."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with autocast_off(x.device.type):
            return super().forward(x.float(), *args, **kwargs)  # type: ignore[misc]


@functools.lru_cache(maxsize=None)
def _fp32_class(cls: type) -> type:
    return type(f"Fp32{cls.__name__}", (_Fp32Forward, cls), {"__module__": __name__})


def fp32_forward(module: nn.Module) -> nn.Module:
    """Make `module` (a classifier layer) compute in fp32 from now on, in place; returns it."""
    if not isinstance(module, _Fp32Forward) and any(True for _ in module.parameters()):
        module.__class__ = _fp32_class(type(module))
    return module


def fp32_classifier(model: nn.Module) -> nn.Module:
    """A timm model whose classifier (`get_classifier()`, several for distilled models) runs in fp32; returns it."""
    heads = model.get_classifier() if hasattr(model, "get_classifier") else ()
    for head in heads if isinstance(heads, (tuple, list)) else (heads,):
        if isinstance(head, nn.Module):
            fp32_forward(head)
    return model
