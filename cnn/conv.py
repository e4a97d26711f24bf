"""``cnn.Conv2d`` (an ``nn.Conv2d`` that runs on our kernels) and ``cnn.convert``."""
from __future__ import annotations

import warnings

import torch.nn as nn
import torch.nn.functional as F

import kernels


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with the same parameters and ``state_dict`` keys, computed by ``kernels.conv2d``.

    ``algorithm`` (default ``"auto"``) is passed to ``kernels.conv2d``: one of ``kernels.ALGORITHMS``.
    It is a plain attribute, so it can be changed after construction.
    """

    def __init__(self, *args, algorithm: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.algorithm = algorithm

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            # Non-zero padding modes pad explicitly, then convolve unpadded, as nn.Conv2d does.
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return kernels.conv2d(
            input, weight, bias, self.stride, padding, self.dilation, self.groups, algorithm=self.algorithm
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", algorithm={self.algorithm!r}"


_MERGED_CLASSES = {}


def _kernel_class(cls: type) -> type:
    """The class a convolution module of type ``cls`` becomes: Conv2d, or a subclass of both."""
    if cls is nn.Conv2d or issubclass(cls, Conv2d):
        return Conv2d if cls is nn.Conv2d else cls
    if cls not in _MERGED_CLASSES:
        _MERGED_CLASSES[cls] = type(cls.__name__, (Conv2d, cls), {"__module__": cls.__module__})
    return _MERGED_CLASSES[cls]


def _computes_like_conv2d(cls: type) -> bool:
    """True when a subclass of nn.Conv2d leaves the computation to nn.Conv2d's own methods."""
    return all(getattr(cls, m) is getattr(nn.Conv2d, m) for m in ("forward", "_conv_forward"))


def convert(model: nn.Module, algorithm: str = "auto") -> nn.Module:
    """Make every ``nn.Conv2d`` of ``model`` a ``cnn.Conv2d`` in place, and return ``model``.

    The modules keep their identity, parameters (the same tensor objects, so an optimizer built
    before still holds them), buffers, hooks and ``state_dict`` keys; only their class changes.
    ``algorithm`` is set on every converted convolution (also on ones that already were
    ``cnn.Conv2d``). A subclass of ``nn.Conv2d`` that overrides ``forward`` or
    ``_conv_forward`` computes something of its own, so it is left as it is, with a warning.
    """
    if algorithm not in kernels.ALGORITHMS:
        raise ValueError(f"convert: unknown algorithm={algorithm!r}; expected one of {list(kernels.ALGORITHMS)}")
    skipped = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        cls = type(module)
        if not isinstance(module, Conv2d) and not _computes_like_conv2d(cls):
            skipped.append(f"{name or '<model>'} ({cls.__name__})")
            continue
        module.__class__ = _kernel_class(cls)
        module.algorithm = algorithm
    if skipped:
        warnings.warn(
            "cnn.convert: left these nn.Conv2d subclasses unchanged because they define their own "
            f"forward: {', '.join(skipped)}",
            stacklevel=2,
        )
    return model


def count_converted(model: nn.Module) -> int:
    """How many convolutions of ``model`` run on our kernels."""
    return sum(isinstance(m, Conv2d) for m in model.modules())


__all__ = ["Conv2d", "convert", "count_converted"]
