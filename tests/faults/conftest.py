"""`fmesh`: one fake mesh (fake_mesh.py) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.fake_mesh import FakeMesh, fake_mesh


@pytest.fixture(scope="module")
def fmesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeMesh]:
    with fake_mesh(tmp_path_factory.mktemp("fake-mesh")) as m:
        yield m
