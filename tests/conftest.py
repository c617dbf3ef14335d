import os

import pytest
import torch

# The tests use tiny models: one thread avoids contention on a shared 2-core machine, unless
# OMP_NUM_THREADS says otherwise.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: deselected (not skipped) on machines without it."""
    if torch.cuda.is_available():
        return
    kept = [item for item in items if "gpu" not in item.keywords]
    dropped = [item for item in items if "gpu" in item.keywords]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory):
    """The bad and crafted inputs of tests/bad_files.py (a tiny real run among them), built once."""
    from bad_files import make_bad_files

    return make_bad_files(tmp_path_factory.mktemp("bad"))
