"""``cnn.fuse(model)``: conv -> BatchNorm (-> add) (-> activation) chains as one ``kernels.conv2d_bn``
(``kernels.conv3d_bn`` for ``nn.Conv3d`` -> ``nn.BatchNorm3d``).

The model is traced with ``torch.fx`` (convolutions, batch norms and activations kept as leaf
calls), and in the graph every

    conv -> bn [-> x + residual] [-> relu | relu6 | silu | hardswish | hardsigmoid | sigmoid]

whose intermediate results have no other user becomes one call of a ``FusedConv2dBN`` module
(``FusedConv3dBN`` for 3-D convolutions and batch norms, as in the video ResNets' blocks).
Matching is on the graph, with ``isinstance`` (subclasses of ``nn.Conv2d`` such as ``cnn.Conv2d``
and of ``nn.BatchNorm2d`` count; PyTorch's FX ``fuse`` matches exact types and skips them), so it
covers torchvision's ``Conv2dNormActivation``, ResNet's BasicBlock / Bottleneck tails
(bn2 / bn3 + identity or downsample, then ReLU: the add is fused into one of the two convs that
feed it), MobileNetV2's linear bottleneck + residual, MobileNetV3's Hardswish blocks, VGG-BN,
GoogLeNet / Inception v3's conv -> BN -> ReLU units, EfficientNet's MBConv (SiLU; the projection
with its residual, stochastic depth being the identity at inference: torchvision's
``stochastic_depth`` call is dropped from the eval graph), ShuffleNet V2's branches, MNASNet's
inverted residuals, and the same patterns in user code, whether the activation is a module,
``F.relu`` or ``x.relu()``.

Only a BatchNorm that follows its convolution is folded. DenseNet's pre-activation layers run
BN -> ReLU -> conv: the ReLU between the BN and the next convolution makes any fold into that
convolution inexact (and without the ReLU a fold would still be inexact where the convolution
pads, the zero padding not being normalised), so those BatchNorms (each dense layer's ``norm1``,
the transitions', ``norm5``) stay; the stem and each layer's 1x1 conv -> ``norm2`` -> ReLU fuse.

A model (or submodule) that ``torch.fx`` cannot trace (data-dependent control flow) is not
rejected: its children are fused one by one instead, so chains inside traceable children are
still fused and the rest runs as before.
"""
from __future__ import annotations

import copy
import operator
from collections import Counter
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import kernels


class FusedConvBN(nn.Module):
    """One fused call (``kernels.<op_name>``): ``act(bn(conv(x)) [+ residual])`` at inference.

    Holds the convolution's weight and bias and the BatchNorm's running statistics, affine
    parameters and ``eps`` (the same tensors as the modules it replaces); the folded per-channel
    scale / shift is cached by ``kernels`` and refreshed when any of them changes. The 2-D and
    3-D forms differ only in the function they call.
    """

    op_name: str  # the kernels function: "conv2d_bn" or "conv3d_bn"

    def __init__(self, conv: nn.Module, bn: nn.Module, activation: Optional[str] = None):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.bn_weight = bn.weight
        self.bn_bias = bn.bias
        self.eps = bn.eps
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups
        self.padding_mode = conv.padding_mode
        self._reversed_padding_repeated_twice = conv._reversed_padding_repeated_twice
        self.activation = activation
        self.algorithm = getattr(conv, "algorithm", "auto")

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            # As nn.Conv2d / nn.Conv3d do: pad explicitly, then convolve unpadded.
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return getattr(kernels, self.op_name)(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.bn_weight, self.bn_bias,
            self.eps, self.stride, padding, self.dilation, self.groups,
            residual=residual, activation=self.activation, algorithm=self.algorithm,
        )

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, "
                f"kernel_size={tuple(self.weight.shape[2:])}, stride={self.stride}, padding={self.padding}, "
                f"groups={self.groups}, eps={self.eps}, activation={self.activation!r}, "
                f"algorithm={self.algorithm!r}")


class FusedConv2dBN(FusedConvBN):
    """``nn.Conv2d`` -> ``nn.BatchNorm2d`` (-> add) (-> act) as one ``kernels.conv2d_bn``."""

    op_name = "conv2d_bn"


class FusedConv3dBN(FusedConvBN):
    """``nn.Conv3d`` -> ``nn.BatchNorm3d`` (-> add) (-> act) as one ``kernels.conv3d_bn``."""

    op_name = "conv3d_bn"


# Convolution class -> (its fused module, the batch norms that may follow it).
FUSABLE = {
    nn.Conv2d: (FusedConv2dBN, (nn.BatchNorm2d, nn.SyncBatchNorm)),
    nn.Conv3d: (FusedConv3dBN, (nn.BatchNorm3d, nn.SyncBatchNorm)),
}
_CONVOLUTIONS = tuple(FUSABLE)


_ACTIVATION_MODULES = (
    (nn.ReLU, "relu"), (nn.ReLU6, "relu6"), (nn.SiLU, "silu"), (nn.Hardswish, "hardswish"),
    (nn.Hardsigmoid, "hardsigmoid"), (nn.Sigmoid, "sigmoid"),
)
_ACTIVATION_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", F.relu_: "relu", torch.relu_: "relu", F.relu6: "relu6",
    F.silu: "silu", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
}
_ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_IN_PLACE_ADDS = (operator.iadd, "add_")


def module_activation(module: nn.Module) -> Optional[str]:
    """The ``conv2d_bn`` activation name a module computes, or None."""
    for cls, name in _ACTIVATION_MODULES:
        if isinstance(module, cls):
            return name
    if isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0.0, 6.0):
        return "relu6"
    return None


def _fusable_pair(conv: nn.Module, bn: nn.Module) -> Optional[type]:
    """The fused module class for ``conv`` followed by ``bn``, or None: a 2-D (3-D) convolution
    and a BatchNorm of its dimension (or a SyncBatchNorm) with running statistics, one per channel."""
    for conv_cls, (fused_cls, norms) in FUSABLE.items():
        if isinstance(conv, conv_cls):
            if (isinstance(bn, norms) and bn.track_running_stats and bn.running_mean is not None
                    and bn.running_var is not None and bn.num_features == conv.out_channels):
                return fused_cls
            return None
    return None


class _LeafTracer(fx.Tracer):
    """Keeps convolutions, batch norms, activations and already-fused modules as single calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (*_CONVOLUTIONS, nn.modules.batchnorm._BatchNorm, FusedConvBN)):
            return True
        if module_activation(m) is not None:
            return True
        return super().is_leaf_module(m, qualname)


def _only_user(node: fx.Node) -> Optional[fx.Node]:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _residual_of(add: fx.Node, operand: fx.Node) -> Optional[fx.Node]:
    """If ``add`` is ``operand + other`` with a tensor ``other``, return ``other``."""
    if add.kwargs or len(add.args) != 2 or add.args[0] is add.args[1]:
        return None
    is_function = add.op == "call_function" and add.target in _ADD_FUNCTIONS
    is_method = add.op == "call_method" and add.target in ("add", "add_")
    if not (is_function or is_method):
        return None
    first, second = add.args
    if add.target in _IN_PLACE_ADDS and first is not operand:
        return None  # `residual += bn(...)` writes into the residual, which others may still read
    other = second if first is operand else first
    return other if isinstance(other, fx.Node) else None


def _activation_of(node: fx.Node, operand: fx.Node, modules) -> Optional[str]:
    if node.op == "call_module":
        if node.args == (operand,) and not node.kwargs:
            return module_activation(modules[node.target])
        return None
    if node.args[:1] != (operand,) or len(node.args) > 1 or set(node.kwargs) - {"inplace"}:
        return None
    if node.op == "call_function":
        return _ACTIVATION_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return _ACTIVATION_METHODS.get(node.target)
    return None


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)


def _is_inference_identity(node: fx.Node) -> bool:
    """torchvision's ``stochastic_depth(x, p, mode, training)`` traced in eval mode (or with p = 0):
    it returns ``x``. (``cnn``'s StochasticDepth module returns its input in eval mode, so it leaves
    no node.)"""
    target = node.target
    if node.op != "call_function" or getattr(target, "__name__", None) != "stochastic_depth":
        return False
    if not getattr(target, "__module__", "").startswith("torchvision."):
        return False
    bound = dict(zip(("input", "p", "mode", "training"), node.args), **node.kwargs)
    return bound.get("training", True) is False or bound.get("p") == 0


def _drop_inference_identities(graph: fx.Graph) -> None:
    for node in list(graph.nodes):
        if _is_inference_identity(node):
            node.replace_all_uses_with(node.args[0] if node.args else node.kwargs["input"])
            graph.erase_node(node)


def fuse_graph(root: nn.Module, graph: fx.Graph) -> int:
    """Rewrite every fusable chain of ``graph`` (traced from ``root``) in place; returns how many.

    Fused modules are installed in ``root`` at the convolution's path (or a fresh path when
    that convolution module is called more than once).
    """
    _drop_inference_identities(graph)
    modules = dict(root.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    fused = 0
    for bn_node in list(graph.nodes):
        if bn_node.op != "call_module" or not isinstance(modules[bn_node.target], nn.modules.batchnorm._BatchNorm):
            continue
        if len(bn_node.args) != 1 or bn_node.kwargs:
            continue
        conv_node = bn_node.args[0]
        if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module"):
            continue
        conv, bn = modules[conv_node.target], modules[bn_node.target]
        fused_cls = _fusable_pair(conv, bn)
        if fused_cls is None or len(conv_node.users) != 1 or len(conv_node.args) != 1 or conv_node.kwargs:
            continue
        chain = [conv_node, bn_node]
        residual = activation = None
        user = _only_user(bn_node)
        if user is not None:
            residual = _residual_of(user, bn_node)
            if residual is not None:
                chain.append(user)
        user = _only_user(chain[-1])
        if user is not None:
            activation = _activation_of(user, chain[-1], modules)
            if activation is not None:
                chain.append(user)

        module = fused_cls(conv, bn, activation)
        target = conv_node.target
        if calls[target] > 1:
            index = 0
            while f"{target}_fused{index}" in modules:
                index += 1
            target = f"{target}_fused{index}"
        _set_submodule(root, target, module)
        modules[target] = module
        args = (conv_node.args[0],) if residual is None else (conv_node.args[0], residual)
        with graph.inserting_before(chain[-1]):
            new_node = graph.call_module(target, args)
        chain[-1].replace_all_uses_with(new_node)
        for node in reversed(chain):
            graph.erase_node(node)
        fused += 1
    graph.lint()
    return fused


def _fuse_tree(module: nn.Module) -> nn.Module:
    """``module`` with its chains fused: as a GraphModule when it traces, else child by child."""
    if isinstance(module, (*_CONVOLUTIONS, nn.modules.batchnorm._BatchNorm, FusedConvBN)):
        return module
    try:
        graph = _LeafTracer().trace(module)
    except Exception:  # untraceable forward: fuse inside its children instead
        graph = None
    if graph is None:
        for name, child in list(module.named_children()):
            setattr(module, name, _fuse_tree(child))
        return module
    if fuse_graph(module, graph) == 0:
        return module
    return fx.GraphModule(module, graph, class_name=type(module).__name__)


def fuse(model: nn.Module) -> nn.Module:
    """An eval-mode, inference-only copy of ``model`` in which every conv -> BN (-> add) (-> act)
    chain runs as one ``kernels.conv2d_bn`` (3-D: ``kernels.conv3d_bn``) launch.

    The original model is not modified. The copy's parameters do not require grad (it is for
    inference: the fused kernels have no backward). When the model traces with ``torch.fx``
    the copy is a ``torch.fx.GraphModule`` with the model's class name and the submodules the
    graph calls (the fused ones at the convolutions' paths); otherwise it is the model's own
    class with fused traceable children. Batch norms that follow no convolution (or whose
    convolution's output is used elsewhere) stay as they are.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cnn.fuse: model must be an nn.Module, got {type(model).__name__}")
    copied = copy.deepcopy(model).eval()
    for p in copied.parameters():
        p.requires_grad_(False)
    return _fuse_tree(copied).eval()
