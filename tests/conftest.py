import os
import warnings

import numpy as np
import pytest
import torch

from tests.helpers import smooth_images

os.environ.setdefault("SE_AVOID_STATS", "true")
warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def images():
    return smooth_images()
