"""H(Γ) and S(Γ) split into independent blocks by a rotation of the crystal (the symmetry-adapted basis).

A proper rotation g of order n that maps the crystal onto itself (an atom permutation π and, on each atom's
orbitals, the real-harmonic Wigner matrix D of :mod:`.wigner`) commutes with H(Γ) and S(Γ): at Γ the lattice
vectors of the permutation carry no phase. Its eigenvalues ω^p (ω = e^{2πi/n}, p = 0..n−1) label n invariant
subspaces, and H c = ε S c falls apart into n problems of about N/n rows each. The basis of irrep p on the orbit
{a, πa, …} (s atoms, rep a) has, on atom π^r a, the orbitals ``ω^{−pr} D^r Q_a / √s``, with Q_a the orthonormal
eigenvectors of D^s (the stabiliser of a) of eigenvalue ω^{ps}; Q_a = I away from the axis. Each block of the
folded matrix is then ⟨a, p| X |b, p⟩ = s_a Σ_j W_a† X_aj W_j over the pairs of the rep a only (X invariant), so
folding reads a third of the pairs of a 3-fold cell, and the folded blocks keep the pairs' sparsity.

Twisted bilayers made by :func:`aiida_deeph.structures.twisted.twisted_bilayer` turn about an atom of both layers:
a 3-fold axis, so Γ becomes a real block (p = 0) and a complex one (p = 1) of N/3 rows; p = 2 is the complex
conjugate of p = 1 (H(Γ) is real) and has its eigenvalues. That is ~3× fewer rows per factorization, whose cost
grows faster than N, and an equal share of the eigenvalues per block.

Real, spinless H(Γ) only: spin-orbit Hamiltonians need the double group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ..io.deeph_format import BlockMatrix, DeepHStructure
from .eigensolvers import dense_eigh, nearest
from .sparse import BlockPattern

SYMPREC = 1e-4  # Å: atoms this close to a rotated atom are its image
NO_ROTATION = "the structure has no rotation symmetry to split H(Γ) with (solve without symmetry)"


class SymmetryError(ValueError):
    """The structure cannot be split by symmetry: no rotation, or a spinful / complex Hamiltonian."""


@dataclass(frozen=True)
class Rotation:
    """A proper rotation of the crystal: Cartesian matrix, order n, and the image π(i) of each atom."""

    matrix: np.ndarray  # (3, 3) Cartesian
    order: int
    permutation: np.ndarray  # (natoms,)


def find_rotation(lattice: np.ndarray, species: list[str], positions: np.ndarray,
                  symprec: float = SYMPREC) -> Rotation | None:
    """The proper rotation of highest order that maps the crystal onto itself, with its atom permutation; None when
    there is none but the identity.

    The candidate rotations are the lattice's own (spglib on the bare lattice: instant); the translation that goes
    with one must carry a reference atom onto an atom of its species, so each of those few thousand candidates is
    tried on a handful of probe atoms at once and only the survivors on every atom. spglib on the whole crystal
    finds the same operations but takes ~70 s for 11,908 atoms (its primitive-cell search), this well under 1 s.
    """
    import spglib

    lattice, positions = np.asarray(lattice, dtype=float), np.asarray(positions, dtype=float)
    species = np.asarray(species)
    fractional = positions @ np.linalg.inv(lattice)
    point_group = spglib.get_symmetry((lattice, np.zeros((1, 3)), [1]), symprec=symprec)["rotations"]
    rotations = sorted({(_order(w), w.tobytes()): w for w in point_group if round(np.linalg.det(w)) == 1}.items(),
                       key=lambda item: -item[0][0])
    tree = cKDTree(fractional % 1.0, boxsize=1.0 + 1e-12)
    _, counts = np.unique(species, return_counts=True)
    reference = int(np.flatnonzero(species == np.unique(species)[np.argmin(counts)])[0])  # the rarest species
    probes = np.random.default_rng(0).choice(len(species), size=min(8, len(species)), replace=False)
    targets = np.flatnonzero(species == species[reference])
    for (order, _), rotation in rotations:
        if order == 1:
            break
        translations = fractional[targets] - fractional[reference] @ rotation.T
        alive = np.ones(len(translations), dtype=bool)
        for probe in probes:  # cheap rejection: where does each candidate send the probe atom?
            images = fractional[probe] @ rotation.T + translations[alive]
            alive[alive] = _images_match(tree, images, fractional, lattice, species, species[probe], symprec)
        for translation in translations[alive]:
            images = fractional @ rotation.T + translation
            _, permutation = tree.query(images % 1.0)
            if not np.all(_images_match(tree, images, fractional, lattice, species, species, symprec)) \
                    or len(np.unique(permutation)) != len(permutation):
                continue
            power = np.arange(len(permutation))  # g^n must give every atom back (no centring translation in it)
            for _ in range(order):
                power = permutation[power]
            if np.array_equal(power, np.arange(len(permutation))):
                cartesian = lattice.T @ rotation @ np.linalg.inv(lattice.T)  # r' = Lᵀ W L⁻ᵀ r, column vectors
                return Rotation(cartesian, order, permutation)
    return None


def _images_match(tree: cKDTree, images: np.ndarray, fractional: np.ndarray, lattice: np.ndarray,
                  species: np.ndarray, expected: np.ndarray | str, symprec: float) -> np.ndarray:
    """Whether each fractional image lands within ``symprec`` Å of an atom of the expected species."""
    _, nearest = tree.query(images % 1.0)
    shift = images - fractional[nearest]
    distance = np.linalg.norm((shift - np.round(shift)) @ lattice, axis=1)
    return (distance < symprec) & (species[nearest] == expected)


def _order(rotation: np.ndarray) -> int:
    power, order = rotation.copy(), 1
    while not np.array_equal(power, np.eye(3, dtype=power.dtype)):
        power, order = power @ rotation, order + 1
    return order


@dataclass(eq=False)
class SymmetryBlock:
    """H and S of one irrep p (character ω^p of the rotation) in its symmetry-adapted basis, as CSR."""

    irrep: int
    degeneracy: int  # 2 when the conjugate irrep n − p ≠ p has the same eigenvalues
    h: sp.csr_matrix
    s: sp.csr_matrix


class GammaFolding:
    """The irrep blocks of H(Γ), S(Γ) of one structure under ``rotation`` (default: :func:`find_rotation`).

    Keeps only the pairs whose first atom represents its orbit; the structure itself can be dropped once this is
    built. :meth:`blocks` yields the irreps p = 0..⌊n/2⌋ one at a time (p and n − p share their eigenvalues).
    """

    def __init__(self, structure: DeepHStructure, rotation: Rotation | None = None) -> None:
        if structure.hamiltonian is None or structure.overlap is None:
            raise ValueError("folding needs both the Hamiltonian and the overlap")
        if structure.spinful or structure.hamiltonian.is_complex:
            raise SymmetryError("symmetry blocks are for real, spinless Hamiltonians (spin-orbit needs the double "
                                "group)")
        rotation = rotation or find_rotation(structure.lattice, structure.species, structure.positions)
        if rotation is None:
            raise SymmetryError(NO_ROTATION)
        self.rotation = rotation
        self.orbit, self.step, self.orbit_size, self.representatives = _orbits(rotation.permutation)
        # each species' orbital rotation D and its powers D^r, r = 0..n−1
        shells = structure.elements_orbital_map
        species = np.asarray(structure.species)
        self.kind = np.unique(species, return_inverse=True)[1]
        self.powers = [_powers(_orbital_rotation64(shells[element], rotation.matrix), rotation.order)
                       for element in np.unique(species)]
        is_rep = np.zeros(structure.natoms, dtype=bool)
        is_rep[self.representatives] = True
        self.hamiltonian = _rows_of(structure.hamiltonian, is_rep)
        self.overlap = _rows_of(structure.overlap, is_rep)

    @property
    def irreps(self) -> list[int]:
        return list(range(self.rotation.order // 2 + 1))

    def degeneracy(self, irrep: int) -> int:
        return 1 if irrep == 0 or 2 * irrep == self.rotation.order else 2

    def blocks(self, irreps: list[int] | None = None) -> Iterator[SymmetryBlock]:
        for irrep in self.irreps if irreps is None else irreps:
            yield self.block(irrep)

    def block(self, irrep: int) -> SymmetryBlock:
        return SymmetryBlock(irrep, self.degeneracy(irrep), *self.matrices(irrep))

    def block_size(self, irrep: int) -> int:
        return sum(q.shape[1] for q in self._orbit_bases(irrep))

    def matrices(self, irrep: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The folded H and S of irrep ``irrep``, both on one CSR layout when they have the same pairs."""
        basis = self._orbit_bases(irrep)
        widths = np.array([q.shape[1] for q in basis])
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
        pattern = BlockPattern.build(self._fold(self.hamiltonian, irrep, basis), offsets, int(widths.sum()), False)
        h = pattern.at_k(np.zeros(3))
        if np.array_equal(self.hamiltonian.atom_pairs, self.overlap.atom_pairs):
            pattern = pattern.with_entries(self._fold(self.overlap, irrep, basis))
        else:
            pattern = BlockPattern.build(self._fold(self.overlap, irrep, basis), offsets, int(widths.sum()), False)
        return h, pattern.at_k(np.zeros(3))

    def _orbit_bases(self, irrep: int) -> list[np.ndarray]:
        """Q of each orbit (by its index): eigenvectors of D^s with eigenvalue ω^{ps}, orthonormal columns."""
        n = self.rotation.order
        bases = []
        for rep, size in zip(self.representatives, self.orbit_size):
            powers = self.powers[self.kind[rep]]
            if size == n:
                bases.append(np.eye(len(powers[0])))
                continue
            projector = sum(_omega(-irrep * size * t, n) * powers[size * t] for t in range(n // size)) * size / n
            values, vectors = np.linalg.eigh(_real_if_close(projector))
            bases.append(vectors[:, values > 0.5])
        return bases

    def _fold(self, matrix: BlockMatrix, irrep: int, basis: list[np.ndarray]) -> BlockMatrix:
        """⟨a, p| X |b, p⟩ blocks: for each pair (a, j = π^r b), √(s_a / s_b) ω^{−pr} Q_a† X_aj D^r Q_b."""
        n = self.rotation.order
        pairs = matrix.atom_pairs
        first, second = pairs[:, 3], pairs[:, 4]
        a, b, r = self.orbit[first], self.orbit[second], self.step[second]
        phase = _omega(-irrep * r, n) * np.sqrt(self.orbit_size[a] / self.orbit_size[b])
        complex_ = not np.allclose(np.imag(phase), 0.0) or any(np.iscomplexobj(q) for q in basis)
        dtype = np.complex128 if complex_ else np.float64
        phase = phase.astype(dtype) if complex_ else phase.real
        generic = (self.orbit_size[a] == n) & (self.orbit_size[b] == n)
        blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (pair indices, their folded blocks)
        for group in _groups(self.kind[first], self.kind[second], r, generic):
            kind_j, step = self.kind[second[group[0]]], r[group[0]]
            rotated = _gather_blocks(matrix, group) @ self.powers[kind_j][step]  # X_aj D^r, one GEMM per group
            if generic[group[0]]:
                blocks.append((group, rotated * phase[group, None, None]))
                continue
            for pair, block in zip(group, rotated):  # the few pairs touching the rotation axis
                folded = basis[a[pair]].conj().T @ block @ basis[b[pair]] * phase[pair]
                blocks.append((np.array([pair]), folded[None].astype(dtype, copy=False)))
        order = np.concatenate([index for index, _ in blocks]) if blocks else np.zeros(0, np.int64)
        shapes = np.concatenate([np.repeat([block.shape[1:]], len(block), axis=0) for _, block in blocks])
        boundaries = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))])
        entries = np.concatenate([block.reshape(-1) for _, block in blocks]).astype(dtype, copy=False)
        folded_pairs = np.zeros((len(order), 5), dtype=np.int64)
        folded_pairs[:, 3], folded_pairs[:, 4] = a[order], b[order]
        return BlockMatrix(folded_pairs, shapes, boundaries, entries)


def _orbits(permutation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(orbit index of each atom, r with atom = π^r(rep), size of each orbit, rep of each orbit)."""
    orbit = np.full(len(permutation), -1, dtype=np.int64)
    step = np.zeros(len(permutation), dtype=np.int64)
    sizes, representatives = [], []
    for atom in range(len(permutation)):
        if orbit[atom] >= 0:
            continue
        index, current, r = len(sizes), atom, 0
        while orbit[current] < 0:
            orbit[current], step[current] = index, r
            current, r = permutation[current], r + 1
        sizes.append(r)
        representatives.append(atom)
    return orbit, step, np.array(sizes), np.array(representatives)


def _orbital_rotation64(shells: list[int], matrix: np.ndarray) -> np.ndarray:
    """D of one atom's orbitals in float64 (torch's default dtype, float32, would leave 1e-7 asymmetries)."""
    import torch  # not for find_rotation, which the CalcJob's input validation calls

    from .wigner import orbital_rotation

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return orbital_rotation(shells, matrix).numpy()
    finally:
        torch.set_default_dtype(previous)


def _powers(matrix: np.ndarray, order: int) -> list[np.ndarray]:
    powers = [np.eye(len(matrix))]
    for _ in range(order - 1):
        powers.append(matrix @ powers[-1])
    return powers


def _omega(exponent: np.ndarray | int, order: int) -> np.ndarray:
    """ω^exponent, exact (±1, ±i and real for real cases) where it can be."""
    angle = 2 * np.pi * (np.asarray(exponent) % order) / order
    value = np.cos(angle) + 1j * np.sin(angle)
    return np.where(np.abs(value.imag) < 1e-14, value.real + 0j, value)


def _real_if_close(matrix: np.ndarray) -> np.ndarray:
    return matrix.real if np.allclose(matrix.imag, 0.0, atol=1e-13) else matrix


def _rows_of(matrix: BlockMatrix, keep_row: np.ndarray) -> BlockMatrix:
    return matrix.subset(keep_row[matrix.atom_pairs[:, 3]])


def _groups(kind_i: np.ndarray, kind_j: np.ndarray, step: np.ndarray, generic: np.ndarray) -> list[np.ndarray]:
    """Pair indices grouped by (species of i, species of j, r, generic): one block shape and one D^r per group."""
    kinds, steps = int(max(kind_i.max(initial=0), kind_j.max(initial=0))) + 1, int(step.max(initial=0)) + 1
    key = ((kind_i * kinds + kind_j) * steps + step) * 2 + generic
    order = np.argsort(key, kind="stable")
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    return np.split(order, cuts)


def _gather_blocks(matrix: BlockMatrix, pairs: np.ndarray) -> np.ndarray:
    """The blocks of ``pairs`` (all of one shape) as an array (P, rows, cols)."""
    rows, cols = matrix.chunk_shapes[pairs[0]]
    offsets = matrix.chunk_boundaries[pairs][:, None] + np.arange(rows * cols)
    return matrix.entries[offsets].reshape(len(pairs), rows, cols)


def gamma_eigenvalues(folding: GammaFolding, num: int, sigma: float,
                      solver: Callable[[list[sp.csr_matrix], int], np.ndarray],
                      dense_limit: int = 3000, margin: float = 1.5) -> np.ndarray:
    """The ``num`` eigenvalues nearest ``sigma`` of the whole H(Γ) c = ε S(Γ) c, from the irrep blocks one at a time.

    Blocks up to ``dense_limit`` rows are solved densely (all their eigenvalues); larger ones by
    ``solver([h, s], k)`` (:meth:`.eigensolvers.ShiftInvert.taking`, which takes h and writes over it), first for
    ``margin`` times their share num/n (+ 2). The merged list is exact once no block stopped nearer σ than the ``num``-th merged value; a block that did is asked again for
    twice as many (folded and factored again).
    """
    want = {p: max(4, int(np.ceil(margin * num / folding.rotation.order)) + 2) for p in folding.irreps}
    found: dict[int, tuple[np.ndarray, bool]] = {}  # irrep: (values, whether they are all of the block's)
    while True:
        for irrep in [p for p in folding.irreps if p not in found]:
            size = folding.block_size(irrep)
            if size <= dense_limit or want[irrep] >= size - 2:
                found[irrep] = (dense_eigh(*folding.matrices(irrep)), True)
            else:  # no reference to H kept here: the solver takes it out of the list, writes over it, frees it
                found[irrep] = (solver(list(folding.matrices(irrep)), want[irrep]), False)
        merged = np.concatenate([np.repeat(values, folding.degeneracy(p)) for p, (values, _) in found.items()])
        incomplete = [p for p, (_, complete) in found.items() if not complete]
        if len(merged) < num and not incomplete:
            raise ValueError(f"{num} eigenvalues asked of a structure with {len(merged)} states")
        radius = np.sort(np.abs(merged - sigma))[num - 1] if len(merged) >= num else np.inf
        short = [p for p in incomplete if np.abs(found[p][0] - sigma).max() < radius]
        if not short:
            return nearest(merged, sigma, num)
        for p in short:
            want[p] *= 2
            del found[p]
