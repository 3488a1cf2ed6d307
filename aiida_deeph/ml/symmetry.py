"""H(Γ) and S(Γ) split into independent blocks by a rotation of the crystal (the symmetry-adapted basis).

A proper rotation g of order n that maps the crystal onto itself (an atom permutation π and, on each atom's
orbitals, the real-harmonic Wigner matrix D of :mod:`.wigner`) commutes with H(Γ) and S(Γ): at Γ the lattice
vectors of the permutation carry no phase. Its eigenvalues ω^p (ω = e^{2πi/n}, p = 0..n−1) label n invariant
subspaces, and H c = ε S c falls apart into n problems of about N/n rows each. The basis of irrep p on the orbit
{a, πa, …} (s atoms, rep a) has, on atom π^r a, the orbitals ``ω^{−pr} D^r Q_a / √s``, with Q_a the orthonormal
eigenvectors of D^s (the stabiliser of a) of eigenvalue ω^{ps}; Q_a = I away from the axis. Each block of the
folded matrix is then ⟨a, p| X |b, p⟩ = s_a Σ_j W_a† X_aj W_j over the pairs of the rep a only (X invariant), so
folding reads a third of the pairs of a 3-fold cell, and the folded blocks keep the pairs' sparsity.

A 2-fold rotation h with h g h⁻¹ = g⁻¹ (the dihedral group D_n) splits further. h maps irrep p onto n − p. For
p = n − p (p = 0, and n/2 for even n) h commutes with the block and halves it by its sign ±1. For the other p, the
antiunitary A = hK (K: complex conjugation, which commutes with the real H(Γ)) maps block p onto itself with A² = 1,
so its A-invariant vectors make the complex block real. h pairs each orbit o with o' = h(o), and the new basis
vectors (1 ± A) x / √2 of x on o need only the rows of o: half the pairs again.

Twisted bilayers made by :func:`aiida_deeph.structures.twisted.twisted_bilayer` turn about an atom of both layers:
a 3-fold axis and three in-plane 2-fold axes that swap the layers (D3). With C3 alone, Γ becomes a real block
(p = 0) and a complex one (p = 1) of N/3 rows; p = 2 is the complex conjugate of p = 1 and has its eigenvalues.
With D3 it becomes two real blocks of N/6 (A1, A2) and one real block of N/3 (E), all folded from a sixth of the
pairs: a real factor of N/3 rows instead of a complex one, and the cost of a factorization grows faster than N.

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
FOLD_CHUNK = 50_000  # pairs folded at once
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
    crystal = _Crystal(lattice, species, positions, symprec)
    for order, rotation in crystal.proper_rotations():
        if order == 1:
            break
        for permutation in crystal.permutations(rotation, order):
            return Rotation(crystal.cartesian(rotation), order, permutation)
    return None


def find_flip(lattice: np.ndarray, species: list[str], positions: np.ndarray, rotation: Rotation,
              symprec: float = SYMPREC) -> Rotation | None:
    """A 2-fold rotation h of the crystal with h g h⁻¹ = g⁻¹ for ``rotation`` g (g and h make the dihedral group
    D_n; in a twisted bilayer, an in-plane axis that swaps the layers), or None."""
    crystal = _Crystal(lattice, species, positions, symprec)
    fractional = np.rint(np.linalg.inv(crystal.lattice.T) @ rotation.matrix @ crystal.lattice.T).astype(int)
    inverse = np.argsort(rotation.permutation)
    for order, flip in crystal.proper_rotations():
        if order != 2 or not np.array_equal(flip @ fractional @ flip @ fractional, np.eye(3, dtype=int)):
            continue
        for permutation in crystal.permutations(flip, 2):  # the atoms must obey h g h = g⁻¹ too (no centring)
            if np.array_equal(permutation[rotation.permutation[permutation]], inverse):
                return Rotation(crystal.cartesian(flip), 2, permutation)
    return None


class _Crystal:
    """Atoms in fractional coordinates with a periodic k-d tree, to find the space-group operations of a point
    operation quickly."""

    def __init__(self, lattice: np.ndarray, species: list[str], positions: np.ndarray, symprec: float) -> None:
        self.lattice, self.symprec = np.asarray(lattice, dtype=float), symprec
        self.species = np.asarray(species)
        self.fractional = np.asarray(positions, dtype=float) @ np.linalg.inv(self.lattice)
        self.tree = cKDTree(self.fractional % 1.0, boxsize=1.0 + 1e-12)

    def proper_rotations(self) -> list[tuple[int, np.ndarray]]:
        """The lattice's proper rotations (fractional, integer), highest order first."""
        import spglib

        point_group = spglib.get_symmetry((self.lattice, np.zeros((1, 3)), [1]), symprec=self.symprec)["rotations"]
        unique = {w.tobytes(): w for w in point_group if round(np.linalg.det(w)) == 1}
        return sorted(((_order(w), w) for w in unique.values()), key=lambda item: -item[0])

    def cartesian(self, rotation: np.ndarray) -> np.ndarray:
        return self.lattice.T @ rotation @ np.linalg.inv(self.lattice.T)  # r' = Lᵀ W L⁻ᵀ r, column vectors

    def permutations(self, rotation: np.ndarray, order: int) -> Iterator[np.ndarray]:
        """The atom permutation of each translation that makes ``rotation`` a symmetry of the crystal whose
        ``order``-th power gives every atom back."""
        species, fractional = self.species, self.fractional
        _, counts = np.unique(species, return_counts=True)
        reference = int(np.flatnonzero(species == np.unique(species)[np.argmin(counts)])[0])  # the rarest species
        probes = np.random.default_rng(0).choice(len(species), size=min(8, len(species)), replace=False)
        targets = np.flatnonzero(species == species[reference])
        translations = fractional[targets] - fractional[reference] @ rotation.T
        alive = np.ones(len(translations), dtype=bool)
        for probe in probes:  # cheap rejection: where does each candidate send the probe atom?
            images = fractional[probe] @ rotation.T + translations[alive]
            alive[alive] = self._images_match(images, species[probe])
        for translation in translations[alive]:
            images = fractional @ rotation.T + translation
            _, permutation = self.tree.query(images % 1.0)
            if not np.all(self._images_match(images, species)) or len(np.unique(permutation)) != len(permutation):
                continue
            power = np.arange(len(permutation))  # g^n must give every atom back (no centring translation in it)
            for _ in range(order):
                power = permutation[power]
            if np.array_equal(power, np.arange(len(permutation))):
                yield permutation

    def _images_match(self, images: np.ndarray, expected: np.ndarray | str) -> np.ndarray:
        """Whether each fractional image lands within ``symprec`` Å of an atom of the expected species."""
        _, nearest = self.tree.query(images % 1.0)
        shift = images - self.fractional[nearest]
        distance = np.linalg.norm((shift - np.round(shift)) @ self.lattice, axis=1)
        return (distance < self.symprec) & (self.species[nearest] == expected)


def _order(rotation: np.ndarray) -> int:
    power, order = rotation.copy(), 1
    while not np.array_equal(power, np.eye(3, dtype=power.dtype)):
        power, order = power @ rotation, order + 1
    return order


@dataclass(frozen=True)
class Irrep:
    """One block of H(Γ): p (character ω^p of the rotation g) and, where a flip h splits a real p further, the
    eigenvalue ±1 of h (``sign``; 0 where there is none, or where hK makes the pair p, n − p one real block)."""

    p: int
    sign: int = 0

    def __str__(self) -> str:
        return f"{self.p}{'' if not self.sign else '+' if self.sign > 0 else '-'}"


@dataclass(eq=False)
class SymmetryBlock:
    """H and S of one irrep in its symmetry-adapted basis, as CSR."""

    irrep: Irrep
    degeneracy: int  # 2 when the conjugate irrep n − p ≠ p has the same eigenvalues
    h: sp.csr_matrix
    s: sp.csr_matrix


@dataclass(frozen=True)
class _Layout:
    """The symmetry-adapted basis of one irrep, orbit by orbit: a folded block of the pair (a, j) is
    ``left[orbit a] @ (phase X_aj D^r) @ right[orbit j]``, at (block of a, block of j)."""

    block_of: np.ndarray  # block index of each orbit (an orbit and its flip partner share one)
    widths: np.ndarray  # rows of each block
    left: list[np.ndarray | None]  # (width, orbitals) for the orbits whose rows are kept, None for the others
    right: list[np.ndarray]  # (orbitals, width of its block)
    real: bool


class GammaFolding:
    """The irrep blocks of H(Γ), S(Γ) of one structure under ``rotation`` (default: :func:`find_rotation`) and,
    with ``dihedral``, the flip that :func:`find_flip` finds for it.

    Keeps only the pairs whose first atom represents its orbit (and, with a flip, only of one orbit of each pair
    the flip swaps); the structure itself can be dropped once this is built. :meth:`blocks` yields the irreps one
    at a time (p and n − p share their eigenvalues).
    """

    def __init__(self, structure: DeepHStructure, rotation: Rotation | None = None, dihedral: bool = True) -> None:
        if structure.hamiltonian is None or structure.overlap is None:
            raise ValueError("folding needs both the Hamiltonian and the overlap")
        if structure.spinful or structure.hamiltonian.is_complex:
            raise SymmetryError("symmetry blocks are for real, spinless Hamiltonians (spin-orbit needs the double "
                                "group)")
        rotation = rotation or find_rotation(structure.lattice, structure.species, structure.positions)
        if rotation is None:
            raise SymmetryError(NO_ROTATION)
        self.rotation = rotation
        self.flip = find_flip(structure.lattice, structure.species, structure.positions, rotation) \
            if dihedral else None
        self.orbit, self.step, self.orbit_size, self.representatives = _orbits(rotation.permutation)
        # each species' orbital rotation D and its powers D^r, r = 0..n−1, and the flip's D_h
        shells = structure.elements_orbital_map
        elements, self.kind = np.unique(np.asarray(structure.species), return_inverse=True)
        self.powers = [_powers(_orbital_rotation64(shells[element], rotation.matrix), rotation.order)
                       for element in elements]
        orbits = np.arange(len(self.representatives))
        if self.flip is None:
            self.partner, self.shift, self.row_orbits = orbits, np.zeros_like(orbits), orbits
        else:  # h(rep of o) = π^t(rep of o'): o' the partner, t the shift; rows kept: the lower orbit of each pair
            self.flip_rotations = [_orbital_rotation64(shells[element], self.flip.matrix) for element in elements]
            image = self.flip.permutation[self.representatives]
            self.partner, self.shift = self.orbit[image], self.step[image]
            self.row_orbits = orbits[self.partner >= orbits]
        is_row = np.zeros(structure.natoms, dtype=bool)
        is_row[self.representatives[self.row_orbits]] = True
        self.hamiltonian = _rows_of(structure.hamiltonian, is_row)
        self.overlap = _rows_of(structure.overlap, is_row)
        self._layouts: dict[Irrep, _Layout] = {}

    @property
    def irreps(self) -> list[Irrep]:
        n, irreps = self.rotation.order, []
        for p in range(n // 2 + 1):
            split = self.flip is not None and (2 * p) % n == 0
            irreps += [Irrep(p, 1), Irrep(p, -1)] if split else [Irrep(p)]
        return irreps

    def degeneracy(self, irrep: Irrep) -> int:
        return 1 if (2 * irrep.p) % self.rotation.order == 0 else 2

    def blocks(self, irreps: list[Irrep] | None = None) -> Iterator[SymmetryBlock]:
        for irrep in self.irreps if irreps is None else irreps:
            yield self.block(irrep)

    def block(self, irrep: Irrep) -> SymmetryBlock:
        return SymmetryBlock(irrep, self.degeneracy(irrep), *self.matrices(irrep))

    def block_size(self, irrep: Irrep) -> int:
        return int(self._layout(irrep).widths.sum())

    def matrices(self, irrep: Irrep) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The folded H and S of ``irrep``, both on one CSR layout when they have the same pairs."""
        layout = self._layout(irrep)
        offsets, size = np.concatenate([[0], np.cumsum(layout.widths)[:-1]]), int(layout.widths.sum())
        pattern = BlockPattern.build(self._fold(self.hamiltonian, irrep, layout), offsets, size, False)
        h = pattern.at_k(np.zeros(3))
        if np.array_equal(self.hamiltonian.atom_pairs, self.overlap.atom_pairs):
            pattern = pattern.with_entries(self._fold(self.overlap, irrep, layout))
        else:
            pattern = BlockPattern.build(self._fold(self.overlap, irrep, layout), offsets, size, False)
        return h, pattern.at_k(np.zeros(3))

    def _layout(self, irrep: Irrep) -> _Layout:
        """Without a flip: a block per orbit, Q_a (and Q_a† on the left). With one, the orbits o and o' = h(o)
        make one block, spanned by v = (1 + A) x / √2 for x on o, A = U(h) for a real p (sign ±1: A v = ±v, and x
        real) and A = U(h) K otherwise (the complex conjugation K commutes with the real H, so A v = v makes the
        block real; x and i x). Then ⟨v|X|v'⟩ = Re⟨x|X (1 + A) x'⟩ needs the rows of o only: A x' = X_o' x'*
        on the partner of x' (:meth:`_flip_matrix`)."""
        if irrep in self._layouts:
            return self._layouts[irrep]
        basis = self._orbit_bases(irrep.p)
        if self.flip is None:
            layout = _Layout(np.arange(len(basis)), np.array([q.shape[1] for q in basis]),
                             [q.conj().T for q in basis], basis, (2 * irrep.p) % self.rotation.order == 0)
        else:
            left: list[np.ndarray | None] = [None] * len(basis)
            right: list[np.ndarray] = [np.zeros((0, 0))] * len(basis)
            block_of, widths = np.empty(len(basis), dtype=np.int64), []
            sign = irrep.sign or 1
            for index, o in enumerate(self.row_orbits):
                partner, flip = self.partner[o], self._flip_matrix(irrep.p, o, basis)
                if partner != o:
                    width = basis[o].shape[1]
                    x = np.eye(width) if irrep.sign else np.hstack([np.eye(width), 1j * np.eye(width)])
                    right[o], right[partner] = basis[o] @ x, sign * basis[partner] @ flip @ x.conj()
                else:
                    x = _flip_invariant(flip, irrep.sign) / np.sqrt(2)
                    right[o] = basis[o] @ (x + sign * flip @ x.conj())
                left[o] = x.conj().T @ basis[o].conj().T
                block_of[[o, partner]] = index
                widths.append(x.shape[1])
            layout = _Layout(block_of, np.array(widths, dtype=np.int64), left, right, True)
        self._layouts[irrep] = layout
        return layout

    def _flip_matrix(self, p: int, o: int, basis: list[np.ndarray]) -> np.ndarray:
        """X_o: A |o, p, μ⟩ = Σ_ν |o', p, ν⟩ (X_o)_νμ with A = U(h) K, o' = h(o), h(rep o) = π^t(rep o'):
        ω^{pt} Q_o'† D^{−t} D_h Q_o* (for a real p, K does nothing and A = U(h))."""
        t, kind, n = self.shift[o], self.kind[self.representatives[o]], self.rotation.order
        rotated = self.powers[kind][(-t) % n] @ self.flip_rotations[kind] @ basis[o].conj()
        return _real_if_close(_omega(p * t, n) * (basis[self.partner[o]].conj().T @ rotated))

    def _orbit_bases(self, p: int) -> list[np.ndarray]:
        """Q of each orbit (by its index): eigenvectors of D^s with eigenvalue ω^{ps}, orthonormal columns."""
        n = self.rotation.order
        bases = []
        for rep, size in zip(self.representatives, self.orbit_size):
            powers = self.powers[self.kind[rep]]
            if size == n:
                bases.append(np.eye(len(powers[0])))
                continue
            projector = sum(_omega(-p * size * t, n) * powers[size * t] for t in range(n // size)) * size / n
            values, vectors = np.linalg.eigh(_real_if_close(projector))
            bases.append(vectors[:, values > 0.5])
        return bases

    def _fold(self, matrix: BlockMatrix, irrep: Irrep, layout: _Layout) -> BlockMatrix:
        """The blocks ``√(s_a / s_b) ω^{−pr} left_a X_aj D^r right_b`` of each pair (a, j = π^r b), summed later
        by :class:`.BlockPattern` where pairs meet in one block. The pairs of a group share the species, r, the
        orbit sizes (so the phase) and both factors: one :class:`_Sandwich` each, written into the entries."""
        n = self.rotation.order
        pairs = matrix.atom_pairs
        first, second = pairs[:, 3], pairs[:, 4]
        a, b, r = self.orbit[first], self.orbit[second], self.step[second]
        phase = _omega(-irrep.p * r, n) * np.sqrt(self.orbit_size[a] / self.orbit_size[b])
        left_id, right_id = _ids(layout.left), _ids(layout.right)
        jobs: list[tuple[np.ndarray, _Sandwich]] = []
        for group in _groups(self.kind[first], self.kind[second], r, self.orbit_size[a], self.orbit_size[b],
                             left_id[a], right_id[b]):
            pair = group[0]
            left = layout.left[a[pair]]
            right = phase[pair] * self.powers[self.kind[second[pair]]][r[pair]] @ layout.right[b[pair]]
            if left.shape[0] and right.shape[1]:
                jobs.append((group, _Sandwich(left, right, layout.real)))
        dtype = np.float64 if layout.real else np.complex128
        order = np.concatenate([group for group, _ in jobs]) if jobs else np.zeros(0, np.int64)
        shapes = np.concatenate([np.repeat([job.shape], len(group), axis=0) for group, job in jobs]) \
            if jobs else np.zeros((0, 2), np.int64)
        boundaries = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))])
        entries = np.empty(boundaries[-1], dtype)
        start = 0
        for group, job in jobs:
            for chunk in np.array_split(group, -(-len(group) // FOLD_CHUNK)):  # bounded transients
                out = entries[start : start + len(chunk) * int(np.prod(job.shape))].reshape(len(chunk), *job.shape)
                job(_gather_blocks(matrix, chunk), out)
                start += out.size
        folded_pairs = np.zeros((len(order), 5), dtype=np.int64)
        folded_pairs[:, 3], folded_pairs[:, 4] = layout.block_of[a[order]], layout.block_of[b[order]]
        return BlockMatrix(folded_pairs, shapes, boundaries, entries)


class _Sandwich:
    """left @ X @ right for a stack of real blocks X, or its real part (``real``), in real GEMMs: the stack times
    [Re right | Im right] at once (one GEMM, not one per block), and the left factor skipped where it is the
    identity. For a real result, Re(L (M_r + i M_i)) = [Re L | −Im L] [M_r; M_i]: with the flip's x and i x
    (L = [I; −iI]) that is the identity on the stacked [M_r; M_i]."""

    def __init__(self, left: np.ndarray, right: np.ndarray, real: bool) -> None:
        self.real, self.width = real, right.shape[1]
        self.complex_right = bool(np.iscomplexobj(right) and np.any(right.imag))
        self.right = np.hstack([right.real, right.imag]) if self.complex_right else right.real
        if real:
            left = np.hstack([left.real, -left.imag]) if self.complex_right else left.real
        self.left = None if left.shape[0] == left.shape[1] and np.array_equal(left, np.eye(len(left))) else left
        self.shape = (len(left), self.width)

    def __call__(self, blocks: np.ndarray, out: np.ndarray) -> None:
        count, rows, columns = blocks.shape
        product = (blocks.reshape(count * rows, columns) @ self.right).reshape(count, rows, -1)
        if self.complex_right:
            parts = product.reshape(count, rows, 2, self.width)
            product = parts.transpose(0, 2, 1, 3).reshape(count, 2 * rows, self.width) if self.real \
                else parts[:, :, 0] + 1j * parts[:, :, 1]
        out[...] = product if self.left is None else np.matmul(self.left, product)


def _flip_invariant(flip: np.ndarray, sign: int) -> np.ndarray:
    """Orthonormal v on an orbit the flip maps onto itself with A v = ±v: the eigenvectors of the real X of sign
    ``sign``; for ``sign`` 0 (A antiunitary, X X* = 1 so X is symmetric and unitary) the Takagi factor V of
    X = V Vᵀ, from the real orthogonal O that diagonalizes Re X and Im X (they commute)."""
    if sign:
        values, vectors = np.linalg.eigh((flip + flip.T) / 2)
        return vectors[:, np.abs(values - sign) < 0.5]
    _, rotation = np.linalg.eigh(flip.real + (np.sqrt(5) - 1) / 2 * flip.imag)  # an irrational mix: no accidents
    diagonal = rotation.T @ flip @ rotation
    if not np.allclose(diagonal, np.diag(np.diag(diagonal)), atol=1e-9):
        raise SymmetryError("the flip does not act as a conjugation on an orbit it fixes")
    return rotation * np.sqrt(np.diag(diagonal))


def _ids(matrices: list[np.ndarray | None]) -> np.ndarray:
    """An index per matrix, equal for equal matrices: the pairs of a group share their left and right factors."""
    seen: dict[tuple, int] = {}
    return np.array([-1 if m is None else seen.setdefault((m.shape, m.dtype.str, m.tobytes()), len(seen))
                     for m in matrices], dtype=np.int64)


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


def _groups(*keys: np.ndarray) -> list[np.ndarray]:
    """Pair indices grouped by equal values of every key (species of i and j, r, left and right factors)."""
    key = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)[1].reshape(-1)
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
    ``margin`` times their share of ``num`` (+ 2), in proportion to their rows. The merged list is exact once no
    block stopped nearer σ than the ``num``-th merged value; a block that did is asked again for twice as many
    (folded and factored again).
    """
    sizes = {irrep: folding.block_size(irrep) for irrep in folding.irreps}
    states = sum(size * folding.degeneracy(irrep) for irrep, size in sizes.items())
    want = {irrep: max(4, int(np.ceil(margin * num * size / states)) + 2) for irrep, size in sizes.items()}
    found: dict[Irrep, tuple[np.ndarray, bool]] = {}  # irrep: (values, whether they are all of the block's)
    while True:
        for irrep in [p for p in folding.irreps if p not in found]:
            size = sizes[irrep]
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
