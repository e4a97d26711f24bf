"""Accuracy of ``cnn.quantize`` (fp8 e4m3 / int8), measured: ``python -m benchmarks.quantization_accuracy``.

(a) per-layer SQNR (dB) of each quantized layer against the float layer (same float inputs),
per dtype and observer; (b) ``cnn.finetune``'s digits classifier (the small ResNet trained on
digits 0-4) in fp32, fp8 and int8: top-1 on its held-out digits; (c) whole-network output SQNR of
the quantized networks against the float ones on inputs drawn like the calibration batches (the
digits ResNet on held-out digits; ResNet-18 and MobileNetV2 at 32x32 on Gaussian images, BN
statistics set by a few train-mode batches). Runs on a GPU or under Triton's interpreter (sizes
chosen for it); writes JSON (``--json``) and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

DTYPES = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}
OBSERVERS = ("max", "percentile")


def _digits(train_images: int, epochs: int, test_images: int, calibration_images: int, width: int):
    from cnn import finetune

    torch.manual_seed(0)
    data = finetune.load_digits_split("cpu" if not torch.cuda.is_available() else "cuda")
    x_train, y_train = (t[:train_images] for t in data["source_train"])
    x_test, y_test = (t[:test_images] for t in data["source_test"])
    model = finetune.build_model(None, num_classes=5, width=width).to(x_train.device)
    seconds = finetune.train(model, x_train, y_train, epochs, lr=0.05, batch=15)
    model.eval()
    # calibration: training images (never the held-out ones), in batches of 32
    calibration = [x_train[i:i + 32] for i in range(0, calibration_images, 32)]
    return model, calibration, (x_test, y_test), seconds


def _conv_bn_network(name: str, size: int, batch: int):
    import cnn

    torch.manual_seed(0)
    model = getattr(cnn, name)(num_classes=10)
    model.train()
    with torch.no_grad():  # BatchNorm statistics of real activations
        for _ in range(2):
            model(torch.randn(batch, 3, size, size))
    model.eval()
    calibration = [torch.randn(batch, 3, size, size) for _ in range(2)]
    test = torch.randn(batch, 3, size, size)
    return model, calibration, test


def main(argv=None) -> int:
    import cnn
    from cnn.finetune import accuracy
    from cnn.quantize import layer_sqnr, sqnr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--test-images", type=int, default=400)
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--networks", nargs="*", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--no-digits", action="store_true", help="skip (a)/(b) on the digits ResNet")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = {"digits": {}, "layers": {}, "networks": {}}

    if not args.no_digits:
        model, calibration, (x_test, y_test), train_s = _digits(args.train_images, args.epochs, args.test_images,
                                                                args.calibration_images, args.width)
        result["digits"]["train_seconds"] = round(train_s, 1)
        result["digits"]["test_images"] = len(x_test)
        result["digits"]["fp32"] = accuracy(model, x_test, y_test)
        with torch.no_grad():
            float_logits = model(x_test)
        for dname, dtype in DTYPES.items():
            for observer in OBSERVERS:
                t0 = time.perf_counter()
                q = cnn.quantize(model, calibration, dtype, observer)
                acc = accuracy(q, x_test, y_test)
                with torch.no_grad():
                    db = sqnr(float_logits, q(x_test))
                result["digits"][f"{dname}/{observer}"] = dict(accuracy=acc, logits_sqnr_db=round(db, 2),
                                                              seconds=round(time.perf_counter() - t0, 1))
                result["layers"].setdefault("digits_resnet", {})[f"{dname}/{observer}"] = {
                    k: round(v, 2) for k, v in layer_sqnr(model, calibration, dtype, observer).items()}
        print(json.dumps(result["digits"], indent=1), flush=True)

    for name in args.networks:
        t0 = time.perf_counter()
        net, cal, test = _conv_bn_network(name, args.size, args.batch)
        with torch.no_grad():
            ref = net(test)
        entry = {}
        for dname, dtype in DTYPES.items():
            for observer in OBSERVERS:
                q = cnn.quantize(net, cal, dtype, observer)
                with torch.no_grad():
                    entry[f"{dname}/{observer}"] = round(sqnr(ref, q(test)), 2)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        result["networks"][name] = entry
        layers = layer_sqnr(net, cal, torch.int8, "max", batches=[test])
        result["layers"][f"{name}/int8/max"] = {k: round(v, 2) for k, v in layers.items()}
        print(name, entry, flush=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["device"] = "cuda" if torch.cuda.is_available() else "cpu (Triton interpreter)"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
