import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture
def data() -> Path:
    return DATA


@pytest.fixture
def fake_kernel(tmp_path) -> Path:
    """A copy of the fake kernel tree: real make, a real compiler, a second to build."""
    dest = tmp_path / "fake-kernel"
    shutil.copytree(DATA / "fake-kernel", dest, symlinks=True)
    return dest
