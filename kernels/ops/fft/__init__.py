"""FFT convolution (``algorithm="fft"``): tiled overlap-save with the DFTs as tensor-core GEMMs.

    forward.py    scope, the launch sequence (kernel chunks, tile batches), grad_input, counts
    plan.py       orientation, DFT tile, kernel chunks, workspace bound, block sizes
    matrices.py   the DFT block matrices (real and imaginary parts as real GEMM operands)
    dft.py        jit helpers: patch gather, 2-D DFT and inverse as GEMMs, cropped epilogue store
    spectrum.py   kernel: spectra of input patches and of the filter
    product.py    kernel: the channel reduction, one complex GEMM per frequency
    inverse.py    kernel: inverse DFT, crop, shared epilogue
    depthwise.py  kernel: depthwise DFT -> multiply -> inverse DFT in one kernel per tile
    weight_grad.py    grad_weight: the launch sequence (spectra of input and grad_output, sum over tiles, inverse)
    weight_product.py kernels: grad_weight's per-frequency sum over tiles (complex GEMM; depthwise elementwise)
"""
