"""Seeding, device choice and the environment record stored next to every result."""
from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (all devices) and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this workspace setting before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Stop glibc from handing freed memory back to the kernel (Linux only; True if applied).

    A CPU training step allocates and frees the same large activation buffers every time. By default glibc
    serves big blocks by mmap and returns them on free, or trims the heap, so every step page-faults its
    buffers back in; worse, its adaptive thresholds drift as a long notebook kernel runs many models. Raising
    both thresholds keeps the buffers for reuse: ResNet-9 training on the 2-core CPU here went from about
    360 to 400 images/s, and a drifted kernel had been down at 280 (`python -m helpers.bench cifar` measures
    it). The cost is that the process keeps its peak memory until it exits."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, limit_bytes)) and bool(mallopt(m_trim_threshold, limit_bytes))


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A private random stream, so data order does not depend on how many dropout masks were drawn."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(seed)
    return generator


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn` for DataLoader: derive numpy/python seeds from torch's per-worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an explicit choice must be available."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"DEVICE={device!r} is not a device name; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"DEVICE={device!r} was asked for but CUDA is not available here; use DEVICE='auto' or 'cpu'")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"DEVICE={device!r}: only {torch.cuda.device_count()} CUDA device(s) exist")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"DEVICE={device!r} was asked for but MPS is not available here; use DEVICE='auto' or 'cpu'")
    return resolved


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"{cpu_model()}, {torch.get_num_threads()} threads"
    return device.type


def cpu_model() -> str:
    """The CPU's model name (what timings depend on), e.g. 'AMD EPYC'; the architecture where it is not known."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


CODE_PATHS = ("helpers", "notebooks", "tests", "requirements.txt", "pyproject.toml", "Makefile")


def git_commit() -> str:
    """The commit the code ran from, with `+dirty` when tracked code differs from it (the generated outputs
    in figures/, results/, weights/ and report/generated/ do not count: a run rewrites them itself)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def environment(device: torch.device | None = None) -> dict:
    """Versions, hardware and code revision: what a reader needs to judge a number."""
    import torchvision

    device = device or torch.device("cpu")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "git_commit": git_commit(),
        "argv0": Path(sys.argv[0]).name if sys.argv else "",
    }
