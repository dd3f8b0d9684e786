import os
from pathlib import Path

import pytest
import torch

# Two cores: one thread per test process keeps the suite predictable.
torch.set_num_threads(max(1, min(2, int(os.environ.get("DISTILLAD_TEST_THREADS", "2")))))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture
def shared_datasets():
    if not SHARED.exists():
        pytest.skip(f"real datasets not found at {SHARED} (../shared/datasets beside the checkout)")
    return SHARED
