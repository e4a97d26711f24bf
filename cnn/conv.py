"""Convolution modules that run on our kernels (``cnn.Conv2d``, ``Conv1d``, ``Conv3d``,
``ConvTranspose2d``, ``ConvTranspose1d``, ``ConvTranspose3d``: subclasses of their ``nn.``
namesakes) and ``cnn.convert``."""
from __future__ import annotations

import warnings
from typing import List, Optional

import torch.nn as nn
import torch.nn.functional as F

import kernels


class _OnKernels:
    """The ``algorithm`` attribute (default ``"auto"``), passed to ``kernels``: one of
    ``kernels.ALGORITHMS``. A plain attribute, so it can be changed after construction."""

    def __init__(self, *args, algorithm: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.algorithm = algorithm

    def extra_repr(self) -> str:
        return super().extra_repr() + f", algorithm={self.algorithm!r}"

    def _padded(self, input):
        """Non-zero padding modes pad explicitly, then convolve unpadded, as nn.Conv1d/2d/3d do."""
        if self.padding_mode != "zeros":
            return F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return input, self.padding

    def _transposed_output_padding(self, input, output_size, spatial_dims: int):
        """nn.ConvTranspose*d's checks and its output_padding for ``output_size``."""
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {type(self).__name__}")
        return self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, spatial_dims,
                                    self.dilation)


class Conv2d(_OnKernels, nn.Conv2d):
    """``nn.Conv2d`` with the same parameters and ``state_dict`` keys, computed by ``kernels.conv2d``."""

    def _conv_forward(self, input, weight, bias):
        input, padding = self._padded(input)
        return kernels.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups,
                              algorithm=self.algorithm)


class Conv1d(_OnKernels, nn.Conv1d):
    """``nn.Conv1d`` with the same parameters and keys, computed by ``kernels.conv1d``."""

    def _conv_forward(self, input, weight, bias):
        input, padding = self._padded(input)
        return kernels.conv1d(input, weight, bias, self.stride, padding, self.dilation, self.groups,
                              algorithm=self.algorithm)


class Conv3d(_OnKernels, nn.Conv3d):
    """``nn.Conv3d`` with the same parameters and keys, computed by ``kernels.conv3d``."""

    def _conv_forward(self, input, weight, bias):
        input, padding = self._padded(input)
        return kernels.conv3d(input, weight, bias, self.stride, padding, self.dilation, self.groups,
                              algorithm=self.algorithm)


class ConvTranspose2d(_OnKernels, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (``output_size`` included) computed by ``kernels.conv_transpose2d``."""

    def forward(self, input, output_size: Optional[List[int]] = None):
        output_padding = self._transposed_output_padding(input, output_size, 2)
        return kernels.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                        self.groups, self.dilation, algorithm=self.algorithm)


class ConvTranspose1d(_OnKernels, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` (``output_size`` included) computed by ``kernels.conv_transpose1d``."""

    def forward(self, input, output_size: Optional[List[int]] = None):
        output_padding = self._transposed_output_padding(input, output_size, 1)
        return kernels.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                        self.groups, self.dilation, algorithm=self.algorithm)


class ConvTranspose3d(_OnKernels, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` (``output_size`` included) computed by ``kernels.conv_transpose3d``."""

    def forward(self, input, output_size: Optional[List[int]] = None):
        output_padding = self._transposed_output_padding(input, output_size, 3)
        return kernels.conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                        self.groups, self.dilation, algorithm=self.algorithm)


# nn class -> (our class, the methods that compute: a subclass overriding one computes something of its own)
FAMILIES = {
    nn.Conv2d: (Conv2d, ("forward", "_conv_forward")),
    nn.Conv1d: (Conv1d, ("forward", "_conv_forward")),
    nn.ConvTranspose2d: (ConvTranspose2d, ("forward",)),
    nn.ConvTranspose1d: (ConvTranspose1d, ("forward",)),
    nn.Conv3d: (Conv3d, ("forward", "_conv_forward")),
    nn.ConvTranspose3d: (ConvTranspose3d, ("forward",)),
}
KERNEL_CLASSES = tuple(ours for ours, _ in FAMILIES.values())

_MERGED_CLASSES = {}


def _family(module: nn.Module):
    return next((base for base in FAMILIES if isinstance(module, base)), None)


def _kernel_class(cls: type, base: type) -> type:
    """The class a module of type ``cls`` (a subclass of ``base``) becomes: ours, or a subclass of both."""
    ours = FAMILIES[base][0]
    if cls is base or issubclass(cls, ours):
        return ours if cls is base else cls
    if cls not in _MERGED_CLASSES:
        _MERGED_CLASSES[cls] = type(cls.__name__, (ours, cls), {"__module__": cls.__module__})
    return _MERGED_CLASSES[cls]


def _computes_like(cls: type, base: type) -> bool:
    """True when a subclass of ``base`` leaves the computation to ``base``'s own methods."""
    return all(getattr(cls, m) is getattr(base, m) for m in FAMILIES[base][1])


def convert(model: nn.Module, algorithm: str = "auto") -> nn.Module:
    """Make every ``nn.Conv2d``, ``nn.Conv1d``, ``nn.Conv3d``, ``nn.ConvTranspose2d``,
    ``nn.ConvTranspose1d`` and ``nn.ConvTranspose3d`` of ``model`` its ``cnn`` counterpart in
    place, and return ``model``.

    The modules keep their identity, parameters (the same tensor objects, so an optimizer built
    before still holds them), buffers, hooks and ``state_dict`` keys; only their class changes.
    ``algorithm`` is set on every converted convolution (also on ones that already were ours).
    A subclass that overrides ``forward`` (or ``_conv_forward``) computes something of its own,
    so it is left as it is, with a warning.
    """
    if algorithm not in kernels.ALGORITHMS:
        raise ValueError(f"convert: unknown algorithm={algorithm!r}; expected one of {list(kernels.ALGORITHMS)}")
    skipped = []
    for name, module in model.named_modules():
        base = _family(module)
        if base is None:
            continue
        cls = type(module)
        if not isinstance(module, KERNEL_CLASSES) and not _computes_like(cls, base):
            skipped.append(f"{name or '<model>'} ({cls.__name__})")
            continue
        module.__class__ = _kernel_class(cls, base)
        module.algorithm = algorithm
    if skipped:
        warnings.warn(
            "cnn.convert: left these convolution subclasses unchanged because they define their own "
            f"forward: {', '.join(skipped)}",
            stacklevel=2,
        )
    return model


def count_converted(model: nn.Module) -> int:
    """How many convolutions of ``model`` run on our kernels."""
    return sum(isinstance(m, KERNEL_CLASSES) for m in model.modules())


__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "convert",
           "count_converted"]
