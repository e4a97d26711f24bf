"""The convolution problems the equivalence sweeps run (small: they run under the interpreter)."""
import pytest

import kernels
from reference import Case

# Every argument form F.conv2d accepts, on non-square kernels 1..7, strides 1..3 and pairs,
# dilations, groups, every padding form, bias or not, batch 0 and unbatched input.
SWEEP = [
    Case(2, 4, 8, 8, 6, 3, 3, padding=1),
    Case(2, 3, 9, 7, 5, 1, 1),
    Case(1, 5, 8, 9, 7, 2, 3, stride=2, padding=(1, 0)),
    Case(2, 4, 9, 9, 4, 3, 3, stride=2, padding=1, groups=2),
    Case(1, 6, 10, 8, 6, 3, 3, dilation=2, padding=2, groups=3, bias=False),
    Case(1, 3, 11, 11, 4, 5, 5, stride=3, padding=2),
    Case(1, 2, 12, 12, 3, 7, 7, stride=2, padding=3),
    Case(1, 4, 7, 9, 5, 1, 4, stride=(1, 2), padding=(0, 1), dilation=(1, 2)),
    Case(2, 4, 6, 7, 4, 4, 2, padding="same"),
    Case(1, 3, 8, 8, 4, 3, 3, padding="same", dilation=(2, 1)),
    Case(1, 4, 7, 7, 6, 3, 3, padding="valid", stride=(3, 1)),
    Case(1, 8, 6, 6, 8, 3, 3, padding=1, groups=8),  # depthwise-shaped
    Case(1, 20, 5, 6, 18, 1, 1, stride=2),  # channel blocks > 1 and a strided 1x1
    Case(1, 3, 6, 5, 4, 3, 3, padding=1, unbatched=True),
    Case(0, 4, 6, 6, 5, 3, 3, padding=1),
]

# The shapes the direct, pointwise and depthwise kernels are for.
SWEEP += [
    Case(1, 3, 10, 10, 8, 7, 7, stride=2, padding=3),  # the RGB stem: C=3, 7x7, stride 2
    Case(1, 4, 9, 9, 8, 3, 3, stride=2, padding=1, groups=4),  # MobileNet depthwise, stride 2, multiplier 2
    Case(1, 4, 8, 7, 12, 5, 3, padding=(2, 1), dilation=(1, 2), groups=4, bias=False),  # depthwise 5x3, x3
    Case(1, 40, 5, 5, 16, 1, 1, stride=(2, 1), padding=1, groups=2),  # strided, padded, grouped 1x1
]

# A smaller set for the slow parts of the cross product (dtypes x layouts x backward): a 3x3,
# a strided grouped 3x3, an even kernel with "same" padding, a strided 1x1, a depthwise.
CORE = [SWEEP[0], SWEEP[3], SWEEP[8], SWEEP[12], SWEEP[11]]

DTYPES = ["float32", "float16", "bfloat16", "float64"]
LAYOUTS = ["nchw", "channels_last", "strided"]


def applies(algorithm: str, case: Case) -> bool:
    params = kernels.ConvParams.from_shapes(case.input_shape, case.weight_shape, **case.conv_args())
    return kernels.REGISTRY[algorithm].eligible(params)


# Algorithms that apply to nearly every case and are slow under the interpreter: where a sweep takes only
# the first few cases per algorithm, these take this many (test_fft.py covers their own shapes).
INTERPRETER_CAPS = {"fft": 1}


def algorithm_cases(cases, per_algorithm=None):
    """(algorithm, case) for every registered algorithm and each case it applies to
    (the first ``per_algorithm`` of them, if given; ``INTERPRETER_CAPS`` lowers that)."""
    params = []
    for name in kernels.REGISTRY:
        limit = per_algorithm if per_algorithm is None else min(per_algorithm, INTERPRETER_CAPS.get(name, per_algorithm))
        cases_for_name = [case for case in cases if applies(name, case)][:limit]
        params += [pytest.param(name, case, id=f"{name}-{case}") for case in cases_for_name]
    return params


def first_applicable(algorithm: str, cases) -> Case:
    return next(case for case in cases if applies(algorithm, case))
