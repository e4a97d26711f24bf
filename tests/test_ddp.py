"""Data-parallel training on our kernels is PyTorch's own DistributedDataParallel: two processes
(gloo) each take half a batch through one step; their synchronised gradients and updated weights
equal a single process's on the whole batch."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

import cnn
from cnn.resnet import BasicBlock

WORLD = 2
BATCH = 4  # per process


def make_model():
    """Our kernels throughout; GroupNorm (per sample) so splitting the batch changes nothing."""
    torch.manual_seed(0)
    norm = lambda c: nn.GroupNorm(2, c)  # noqa: E731
    return nn.Sequential(
        cnn.ConvNormActivation(2, 4, stride=2, norm_layer=norm), BasicBlock(4, 4, norm_layer=norm),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )


def make_batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(WORLD * BATCH, 2, 6, 6, generator=g), torch.randint(0, 3, (WORLD * BATCH,), generator=g)


def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def one_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.detach().cpu().clone() for p in model.parameters()]
    opt.step()
    return grads, [p.detach().cpu().clone() for p in model.parameters()]


def _worker(rank, init_file, out_dir):
    torch.backends.cudnn.allow_tf32 = False  # IEEE fp32, as conftest sets it for the test process
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model = nn.parallel.DistributedDataParallel(make_model().to(device()))
        x, y = make_batch()
        part = slice(rank * BATCH, (rank + 1) * BATCH)
        grads, params = one_step(model, x[part].to(device()), y[part].to(device()))
        torch.save({"grads": grads, "params": params}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_two_processes_match_single_process(tmp_path):
    # Children are spawned fresh and inherit os.environ, so TRITON_INTERPRET (set by conftest
    # without a GPU) is set before they import triton.
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    model = make_model().to(device())
    assert cnn.count_converted(model) == 3
    x, y = make_batch()
    grads, params = one_step(model, x.to(device()), y.to(device()))
    for rank, result in enumerate(results):
        for i, (got, expected) in enumerate(zip(result["grads"] + result["params"], grads + params)):
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"rank {rank}, tensor {i}")
    for a, b in zip(results[0]["grads"], results[1]["grads"]):
        assert torch.equal(a, b)  # synchronised: both ranks hold the same averaged gradient
    assert any(g.abs().max() > 0 for g in grads)
