"""Throughput benchmarks that print figures (never timed tests).

    python -m helpers.bench cifar [--seconds 20] [--batch 128] [--model baseline|resnet|resnet9|airnet] [--amp]
                                  [--device auto] [--write results/01_bench.json]

`cifar` trains the same model for the same wall time with two input pipelines and prints training
images per second for each: the notebooks' (the whole uint8 data set on the device, flips and
translations on whole batches there) and the classic one (a torchvision-style dataset handing out PIL
images, per-image RandomHorizontalFlip/RandomCrop/ToTensor/Normalize, a DataLoader with worker
processes). It also prints the model's training FLOPs per image and the achieved fraction of a
matmul's FLOP/s on the same device in the precision the model trains in, measured in the same run.
`--amp` trains under autocast (bfloat16 on the CPU, float16 on CUDA), to decide whether a profile should use
it on this machine. `--write` stores the figures with the CPU model and settings (the README quotes that file).
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import augment as A
from .data import DataMissingError, TensorLoader, channel_stats, load_cifar, synthetic_images
from .repro import cpu_model, keep_freed_memory, resolve_device
from .results import read_json_if_present, write_json
from .training import autocast_settings
from .vgg import AirNet, CifarNet, ResNet9, resnet_steps


def matmul_flops(device: torch.device, sizes=(1024, 2048, 4096), seconds: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> float:
    """The best FLOP/s of n x n matmuls in `dtype` over `sizes`: the practical ceiling for dense work. One
    size alone under-states it (a 2048 matmul on two cores ran slower than the CIFAR convolutions)."""
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        a @ b
        _sync(device)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or count < 2:
            a @ b
            count += 1
        _sync(device)
        best = max(best, 2 * n ** 3 * count / (time.perf_counter() - start))
    return best


def forward_flops(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-adds x 2 of the convolutions and linear layers for one image."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2 * output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


class PilCifar(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does per item: uint8 array -> PIL image -> per-image transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std):
        from torchvision import transforms as T

        self.arrays, self.labels = images.permute(0, 2, 3, 1).numpy(), labels
        self.transform = T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(32, padding=4), T.ToTensor(),
                                    T.Normalize(mean, std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.arrays[i])), self.labels[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(model: nn.Module, batches, device: torch.device, seconds: float, warmup: int = 2,
                     amp: bool = False) -> float:
    """Training images per second (forward, backward, SGD step) over `seconds` of wall time."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    enabled, dtype, _ = autocast_settings(device, amp)
    model.train()
    images_done, start = 0, None
    while True:
        for step, (x, y) in enumerate(batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=enabled):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if start is None and step + 1 == warmup:
                _sync(device)
                start = time.perf_counter()
            elif start is not None:
                images_done += len(y)
                if time.perf_counter() - start > seconds:
                    _sync(device)
                    return images_done / (time.perf_counter() - start)


MODELS = {"baseline": lambda: CifarNet(), "resnet": lambda: CifarNet(**resnet_steps()["residual"]),
          "resnet9": lambda: ResNet9((32, 64, 128, 256)), "airnet": lambda: AirNet()}


def cifar(seconds: float = 20.0, batch: int = 128, model_name: str = "baseline", device: str = "auto",
          data_root=None, workers: int = 2, limit: int | None = 10_000, amp: bool = False) -> dict:
    """Training images/s of both pipelines, printed and returned as a record (see `--write`)."""
    device = resolve_device(device)
    try:
        data = load_cifar(data_root, "train").limit(limit)
        source = "real CIFAR-10"
    except DataMissingError:
        data = synthetic_images(limit or 10_000, 10, size=32)
        source = "synthetic stand-in (no CIFAR-10 found)"
    mean, std = channel_stats(data.images)
    flops = 3 * forward_flops(MODELS[model_name]())  # backward costs about twice the forward
    dtype = autocast_settings(device, True)[1] if amp else torch.float32
    ceiling = matmul_flops(device, dtype=dtype)
    precision = f"autocast {str(dtype).removeprefix('torch.')}" if amp else "float32"
    rows = []
    ours = TensorLoader(data, batch, shuffle=True, drop_last=True, mean=mean, std=std, device=device,
                        augment=A.Compose(A.Flip(0.5), A.Translate(0.125)))
    classic = torch.utils.data.DataLoader(PilCifar(data.images, data.labels, mean, std), batch_size=batch,
                                          shuffle=True, drop_last=True, num_workers=workers,
                                          pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    for name, batches in (("uint8 tensor on device + batched augmentation", ours),
                          (f"DataLoader ({workers} workers) + per-image PIL transforms", classic)):
        torch.manual_seed(0)
        model = MODELS[model_name]().to(device)
        if isinstance(model, AirNet):
            model.fit_whitening(next(iter(ours))[0][:256])  # a batch as the model sees it, already on the device
        rate = train_throughput(model, batches, device, seconds, amp=amp)
        rows.append({"pipeline": name, "images_per_s": rate, "fraction": rate * flops / ceiling})
    print(f"CIFAR training throughput: {model_name} model ({flops / 1e6:.1f} MFLOP per training image), "
          f"batch {batch}, {source}, device {device}, torch threads {torch.get_num_threads()}, "
          f"{precision}; {precision.split()[-1]} matmul ceiling (best of 1024/2048/4096) {ceiling / 1e9:.1f} GFLOP/s")
    print(f"{'pipeline':<58} {'images/s':>10} {'of matmul FLOP/s':>17}")
    for row in rows:
        print(f"{row['pipeline']:<58} {row['images_per_s']:>10.0f} {100 * row['fraction']:>16.1f}%")
    print(f"speed-up of the tensor pipeline: {rows[0]['images_per_s'] / rows[1]['images_per_s']:.2f}x")
    return {"model": model_name, "train_flops_per_image": flops, "batch": batch, "precision": precision,
            "matmul_ceiling_flops": ceiling, "data": source, "images": len(data.labels),
            "seconds_per_pipeline": seconds,
            "device": str(device), "cpu_model": cpu_model(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "date": datetime.date.today().isoformat(), "pipelines": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=["cifar"])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed training per pipeline")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--model", choices=sorted(MODELS), default="baseline",
                        help="resnet9: notebook 01's earlier strong model at its fast widths; airnet: its strong model")
    parser.add_argument("--amp", action="store_true", help="autocast: bfloat16 on the CPU, float16 on CUDA")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the classic pipeline")
    parser.add_argument("--write", default=None, metavar="PATH",
                        help="store the figures as JSON (e.g. results/01_bench.json, which the README quotes)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's memory return on "
                             "(notebook 01 turns it off: helpers.repro.keep_freed_memory)")
    args = parser.parse_args(argv)
    kept = False if args.default_malloc else keep_freed_memory()
    print(f"freed memory kept for reuse (notebook setting): {kept}")
    record = cifar(args.seconds, args.batch, args.model, args.device, args.data_root, args.workers, amp=args.amp)
    if args.write:  # one record per model and precision: the README's table lists them all
        record["freed_memory_kept"] = kept
        stored = read_json_if_present(Path(args.write))
        write_json(stored | {f"{record['model']}/{record['precision']}": record}, Path(args.write))
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
