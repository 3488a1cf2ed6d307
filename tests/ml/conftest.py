"""Fixtures of the ML tests."""

import pytest
import torch


@pytest.fixture()
def float64():
    """float64 default dtype (e3nn builds its matrices in it) and a fixed seed, restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)
