"""torchvision's Python model definitions, the oracle of the model tests.

On the CPU build of torch, torchvision's compiled operators (nms, roi_align, ...) fail to
register, and ``import torchvision`` then dies registering meta kernels for them. Model
definitions need none of those operators, so on that failure the import is retried with the
meta registrations skipped.
"""
import importlib
import importlib.util
import sys
import types

import pytest


def import_torchvision():
    """The ``torchvision`` module (tests skip when it is not installed; ``make test`` installs it)."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision's model definitions are the oracle: pip install --no-deps torchvision")
    try:
        return importlib.import_module("torchvision")
    except (RuntimeError, OSError):
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        return importlib.import_module("torchvision")
