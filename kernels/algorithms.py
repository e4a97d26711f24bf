"""Registers the package's algorithms (import order = the order tests and reports list them)."""
from .ops.im2col import im2col_forward
from .registry import Algorithm, direct_macs, register

register(Algorithm(
    name="im2col",
    unsupported=lambda params: None,  # implicit GEMM serves every shape F.conv2d accepts
    forward=im2col_forward,
    count=direct_macs,
    description="implicit GEMM: N*P*Q x K/groups x (R*S*C/groups), no column buffer",
))
