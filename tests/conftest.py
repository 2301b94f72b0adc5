import os
from pathlib import Path

import pytest
import torch

from helpers.data import resolve_data_root

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """DATA_ROOT as the notebooks resolve it (CI prepares it from ../shared/data)."""
    return resolve_data_root(None)


def require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path}: run `bash ../shared/data/prepare.sh data` or set DATA_ROOT")
    return path
