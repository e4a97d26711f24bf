"""The autograd layer: custom ops over the kernels (``ops``), their vmap rules (``batching``) and
the autograd Functions that give them every derivative ``F.conv2d`` has (``functions``)."""
