"""Transfer learning helpers: swap the classifier head, freeze / unfreeze the backbone."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch.nn as nn

# Where each family keeps its head: ResNet / GoogLeNet / ShuffleNet ``fc``; VGG / MobileNet /
# EfficientNet / DenseNet ``classifier`` (a Linear, or a Sequential ending in one; SqueezeNet's ends
# in a 1x1 convolution); timm-style ``head``.
HEAD_ATTRIBUTES = ("fc", "classifier", "head")


def _is_conv_classifier(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1


def find_head(model: nn.Module) -> Tuple[str, nn.Module]:
    """The qualified name and module of the model's final classifier: a Linear (or a 1x1 convolution
    to the classes, as SqueezeNet's) at one of ``HEAD_ATTRIBUTES``, the last one of a Sequential
    there, or the last child of a Sequential model. Auxiliary classifiers (GoogLeNet's ``aux1`` /
    ``aux2``, Inception v3's ``AuxLogits``) are not the head: build those with ``aux_logits=False``."""
    if isinstance(model, nn.Sequential) and len(model) and isinstance(model[-1], nn.Linear):
        return str(len(model) - 1), model[-1]
    for attr in HEAD_ATTRIBUTES:
        module = getattr(model, attr, None)
        if isinstance(module, nn.Linear):
            return attr, module
        if isinstance(module, nn.Sequential):
            heads = [(name, m) for name, m in module.named_children()
                     if isinstance(m, nn.Linear) or _is_conv_classifier(m)]
            if heads:
                name, head = heads[-1]
                return f"{attr}.{name}", head
    raise ValueError(
        f"cannot find the classifier head of {type(model).__name__}: expected a Linear at one of "
        f"{list(HEAD_ATTRIBUTES)} (or as the last Linear or 1x1 Conv2d of a Sequential there)"
    )


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the final classifier (``fc``, ``classifier[-1]``, ...) by a fresh one with ``num_classes`` outputs.

    The new layer is of the old one's kind (Linear, or a 1x1 convolution of the same class and
    ``algorithm``) with its input width, bias setting, dtype and device, and PyTorch's default
    initialisation. Returns ``model`` (changed in place).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"replace_head: num_classes must be a positive int, got {num_classes!r}")
    name, old = find_head(model)
    factory = dict(bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, **factory)
    else:
        new = type(old)(old.in_channels, num_classes, kernel_size=1, **factory)
        if hasattr(old, "algorithm"):
            new.algorithm = old.algorithm
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return model


def _keep_eval(module: nn.Module, inputs) -> None:
    module.training = False


def freeze(model: nn.Module, up_to: Optional[str] = None) -> List[str]:
    """Stop training the backbone: returns the names of the parameters it froze.

    Freezes every parameter registered before the end of submodule ``up_to`` (e.g. ``"layer3"``,
    ``"features.10"``; these models register their parameters in forward order), or, with
    ``up_to=None``, every parameter outside the classifier head. Frozen BatchNorm layers also keep
    their running statistics (their forward runs in eval mode even after ``model.train()``), so a frozen
    backbone computes the same features while the head trains. ``unfreeze`` undoes it.
    """
    names = [name for name, _ in model.named_parameters()]
    if up_to is None:
        head_name, _ = find_head(model)
        frozen = [n for n in names if not n.startswith(head_name + ".")]
    else:
        try:
            target = model.get_submodule(up_to)
        except AttributeError:
            raise ValueError(f"freeze: model has no submodule named up_to={up_to!r}") from None
        inside = {f"{up_to}.{n}" for n, _ in target.named_parameters()}
        if not inside:
            raise ValueError(f"freeze: submodule up_to={up_to!r} has no parameters")
        last = max(names.index(n) for n in inside)
        frozen = names[: last + 1]
    frozen_set = set(frozen)
    for name, p in model.named_parameters():
        if name in frozen_set:
            p.requires_grad_(False)
    for name, module in model.named_modules():
        own = [f"{name}.{n}" if name else n for n, _ in module.named_parameters(recurse=False)]
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and own and all(n in frozen_set for n in own):
            if getattr(module, "_cnn_frozen_hook", None) is None:
                module._cnn_frozen_hook = module.register_forward_pre_hook(_keep_eval)
            module.training = False
    return frozen


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every parameter trainable again and let BatchNorm layers follow ``model.train()`` again."""
    for p in model.parameters():
        p.requires_grad_(True)
    for module in model.modules():
        handle = getattr(module, "_cnn_frozen_hook", None)
        if handle is not None:
            handle.remove()
            module._cnn_frozen_hook = None
            module.training = model.training
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
