"""Transfer learning helpers: swap the classifier head, freeze / unfreeze the backbone."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch.nn as nn

# Where each family keeps its head: ResNet ``fc``; VGG / MobileNet ``classifier`` (a Sequential
# ending in a Linear); timm-style ``head``.
HEAD_ATTRIBUTES = ("fc", "classifier", "head")


def find_head(model: nn.Module) -> Tuple[str, nn.Linear]:
    """The qualified name and module of the model's final Linear classifier (or the last child of a
    Sequential model, when that is a Linear)."""
    if isinstance(model, nn.Sequential) and len(model) and isinstance(model[-1], nn.Linear):
        return str(len(model) - 1), model[-1]
    for attr in HEAD_ATTRIBUTES:
        module = getattr(model, attr, None)
        if isinstance(module, nn.Linear):
            return attr, module
        if isinstance(module, nn.Sequential):
            linears = [(name, m) for name, m in module.named_children() if isinstance(m, nn.Linear)]
            if linears:
                name, linear = linears[-1]
                return f"{attr}.{name}", linear
    raise ValueError(
        f"cannot find the classifier head of {type(model).__name__}: expected a Linear at one of "
        f"{list(HEAD_ATTRIBUTES)} (or as the last Linear of a Sequential there)"
    )


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the final Linear (``fc``, ``classifier[-1]``, ...) by a fresh one with ``num_classes`` outputs.

    The new layer has the old one's input width, bias setting, dtype and device, and PyTorch's
    default initialisation. Returns ``model`` (changed in place).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"replace_head: num_classes must be a positive int, got {num_classes!r}")
    name, old = find_head(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
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
