"""Larger or spinful test structures made from the real MoS2 reference blocks (shared by the solver tests)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from aiida_deeph.io.deeph_format import BlockMatrix, DeepHStructure
from aiida_deeph.ml.pardiso import mkl_runtime

MOS2 = Path("abacus/MoS2_v3.10_deeph_dock")
MOS2_REF = MOS2 / "deeph_ref"


@pytest.fixture(scope="module")
def single_threaded_blas():
    """The test matrices are tiny and the test box's 2 cores are shared: BLAS/MKL threads would only spin against
    each other (a 477×477 eigh took 8 s threaded, 0.05 s on one thread). Limited per module, not process-wide."""
    mkl_runtime()  # load MKL first, so that the limit reaches it too
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def read_mos2(fixtures: Path) -> DeepHStructure:
    return DeepHStructure.read(fixtures / MOS2_REF)


def _tile_blocks(matrix: BlockMatrix, reps: np.ndarray, new_index: dict) -> BlockMatrix:
    blocks = {}
    for (rx, ry, rz, i, j), block in matrix.items():
        for cell in itertools.product(*(range(n) for n in reps)):
            target = np.array(cell) + (rx, ry, rz)
            shift = target // reps  # the neighbour's image in supercell units
            key = (*(int(x) for x in shift), new_index[cell, i], new_index[tuple(target % reps), j])
            blocks[key] = block
    return BlockMatrix.from_blocks(blocks)


def supercell(structure: DeepHStructure, reps: tuple[int, int, int]) -> DeepHStructure:
    """The structure repeated reps[0]×reps[1]×reps[2] times, atoms kept grouped by element, blocks copied."""
    reps = np.asarray(reps)
    cells = list(itertools.product(*(range(n) for n in reps)))
    order = sorted(((structure.elements.index(el), c, a) for c in cells for a, el in enumerate(structure.species)))
    new_index = {(c, a): n for n, (_, c, a) in enumerate(order)}
    positions = np.array([structure.positions[a] + np.array(c) @ structure.lattice for _, c, a in order])
    return DeepHStructure(
        lattice=structure.lattice * reps[:, None],
        species=[structure.species[a] for _, _, a in order],
        positions=positions,
        elements_orbital_map=structure.elements_orbital_map,
        fermi_energy_eV=structure.fermi_energy_eV,
        hamiltonian=_tile_blocks(structure.hamiltonian, reps, new_index),
        overlap=_tile_blocks(structure.overlap, reps, new_index),
        occupation=None if structure.occupation is None else structure.occupation * int(np.prod(reps)),
    )


def spinful(structure: DeepHStructure, coupling: float = 0.05) -> DeepHStructure:
    """A spinful copy: H_ij(R) → U ⊗ H_ij(R) + i·c·σ_z ⊗ A_ij(R) (spin-major), Hermitian by construction.

    U is a fixed Hermitian 2×2 matrix and A_ij(R) = (R_x − R_y)·H_ij(R): odd in R, so that with the real
    H_ji(−R) = H_ij(R)ᵀ the result keeps X_ji(−R) = X_ij(R)^† and H(k) stays Hermitian.
    """
    spin_mix = np.array([[1.0, 0.1 - 0.05j], [0.1 + 0.05j, 0.95]])
    sigma_z = np.diag([1.0, -1.0])
    blocks = {
        key: np.kron(spin_mix, block) + 1j * coupling * (key[0] - key[1]) * np.kron(sigma_z, block)
        for key, block in structure.hamiltonian.items()
    }
    return DeepHStructure(
        lattice=structure.lattice,
        species=structure.species,
        positions=structure.positions,
        elements_orbital_map=structure.elements_orbital_map,
        fermi_energy_eV=structure.fermi_energy_eV,
        spinful=True,
        hamiltonian=BlockMatrix.from_blocks(blocks),
        overlap=structure.overlap,
    )
