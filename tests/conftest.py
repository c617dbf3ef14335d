import os

import pytest
import torch

# The tests use tiny models: one thread avoids contention on a shared 2-core machine, unless
# OMP_NUM_THREADS says otherwise.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
