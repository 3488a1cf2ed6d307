"""HamiltonianData: stores a DeepH folder, exports it unchanged, refuses tampered content."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.io import DeepHFormatError, DeepHStructure


@pytest.fixture()
def mos2_ref(dft_fixtures):
    return dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock" / "deeph_ref"


def test_store_and_export(aiida_profile, mos2_ref, tmp_path):
    node = HamiltonianData(folder=mos2_ref).store()
    assert node.natoms == 3 and node.npairs == 239 and not node.spinful
    assert node.elements_orbital_map == {"Mo": [0, 0, 0, 0, 1, 1, 2, 2, 3], "S": [0, 0, 1, 1, 2]}
    assert node.base.attributes.get("units") == {"energy": "eV", "length": "Angstrom"}
    node.export_deeph(tmp_path / "out")
    for name in ("POSCAR", "info.json", "hamiltonian.h5", "overlap.h5"):
        assert (tmp_path / "out" / name).read_bytes() == (mos2_ref / name).read_bytes()
    structure = node.get_structure()
    assert structure.get_formula() == "MoS2"
    assert np.allclose(structure.cell, DeepHStructure.read(mos2_ref).lattice)
    levels = node.eigenvalues([[0, 0, 0], [0.25, 0, 0]])
    assert levels.shape == (2, 53) and abs(levels[0, 0] + 63.9169) < 2e-4
    hk, sk = node.hk([[0.1, 0.2, 0]])
    assert np.allclose(hk[0], hk[0].conj().T) and np.allclose(sk[0], sk[0].conj().T)


def test_tampered_repository_is_caught(aiida_profile, mos2_ref, tmp_path):
    node = HamiltonianData(folder=mos2_ref)
    node.base.repository.put_object_from_bytes(b"not hdf5", "overlap.h5")  # before storing the repo is writable
    with pytest.raises(ValueError, match="sha256"):
        node.export_deeph(tmp_path / "out")


def test_invalid_folder_refused(aiida_profile, tmp_path):
    with pytest.raises(DeepHFormatError, match="POSCAR"):
        HamiltonianData(folder=tmp_path)
