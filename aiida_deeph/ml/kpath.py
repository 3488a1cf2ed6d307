"""Band-structure k-paths: straight segments between labelled special points, in fractional coordinates.

Segments follow DeepH-dock's ``K_PATH`` convention (one line ``nk kx1 ky1 kz1 kx2 ky2 kz2 L1 L2`` per segment, both
end points sampled), so a path reads from and writes to that file and ``band.h5`` keeps dock's layout. Standard
paths come from ASE's Bravais-lattice analysis (Setyawan–Curtarolo); a slab or monolayer — vacuum along the third
lattice vector — gets the 2D path of its 2D lattice (hexagonal Γ–M–K–Γ, rectangular Γ–X–S–Y–Γ–S, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.cell import Cell

GAMMA = "Γ"


def path_length(lattice: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """|Δk| / 2π in 1/Å (dock's convention) of fractional steps ``delta`` (…, 3)."""
    return np.linalg.norm(delta @ np.linalg.inv(lattice).T, axis=-1)


@dataclass(frozen=True, eq=False)
class KPath:
    """Straight segments ``start[s] → end[s]`` (fractional), each sampled at ``npoints[s]`` points, ends included."""

    lattice: np.ndarray  # (3, 3) rows are the lattice vectors, Å
    start: np.ndarray  # (nseg, 3)
    end: np.ndarray  # (nseg, 3)
    labels: tuple[tuple[str, str], ...]  # (start label, end label) per segment
    npoints: tuple[int, ...]

    @property
    def reciprocal_lattice(self) -> np.ndarray:
        """Rows b_i with a_i·b_j = 2πδ_ij, 1/Å."""
        return 2 * np.pi * np.linalg.inv(self.lattice).T

    @property
    def kpoints(self) -> np.ndarray:
        """(nk, 3) fractional k-points, segment after segment."""
        return np.concatenate([
            a + np.linspace(0.0, 1.0, n)[:, None] * (b - a) for a, b, n in zip(self.start, self.end, self.npoints)
        ])

    @property
    def label_positions(self) -> np.ndarray:
        """(nseg + 1,) path coordinate of each segment end; a jump between segments costs no distance."""
        return np.concatenate([[0.0], np.cumsum(path_length(self.lattice, self.end - self.start))])

    @property
    def distances(self) -> np.ndarray:
        """(nk,) path coordinate of each k-point, for plotting."""
        edges = self.label_positions
        return np.concatenate([
            np.linspace(edges[s], edges[s + 1], n) for s, n in enumerate(self.npoints)
        ])

    @property
    def tick_labels(self) -> list[str]:
        """One label per segment end; ``X|Y`` where a segment ends at X and the next starts elsewhere at Y."""
        ticks = [self.labels[0][0]]
        for (_, previous_end), (next_start, _) in zip(self.labels[:-1], self.labels[1:]):
            ticks.append(previous_end if previous_end == next_start else f"{previous_end}|{next_start}")
        return ticks + [self.labels[-1][1]]

    def to_k_path_text(self) -> str:
        """DeepH-dock ``K_PATH`` text."""
        return "".join(
            f"{n} {' '.join(f'{x:.10g}' for x in (*a, *b))} {la} {lb}\n"
            for n, a, b, (la, lb) in zip(self.npoints, self.start, self.end, self.labels)
        )

    @classmethod
    def from_k_path_text(cls, text: str, lattice: np.ndarray) -> "KPath":
        rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if any(len(row) < 9 for row in rows) or not rows:
            raise ValueError("K_PATH lines need 'nk kx1 ky1 kz1 kx2 ky2 kz2 L1 L2'")
        return cls(
            lattice=np.asarray(lattice, dtype=float),
            start=np.array([[float(x) for x in row[1:4]] for row in rows]),
            end=np.array([[float(x) for x in row[4:7]] for row in rows]),
            labels=tuple((row[7], row[8]) for row in rows),
            npoints=tuple(int(row[0]) for row in rows),
        )


def is_two_dimensional(lattice: np.ndarray, positions: np.ndarray, min_vacuum: float = 8.0) -> bool:
    """True when the third lattice vector is normal to the first two and the atoms leave ≥ ``min_vacuum`` Å of it.

    ASE's 2D lattices require that layout (a, b in plane, c out of plane), as do DeepH's slab datasets.
    """
    lattice = np.asarray(lattice, dtype=float)
    normal = np.cross(lattice[0], lattice[1])
    normal /= np.linalg.norm(normal)
    in_plane = max(abs(lattice[0] @ lattice[2]), abs(lattice[1] @ lattice[2])) / np.linalg.norm(lattice[2])
    if in_plane > 1e-6 * np.linalg.norm(lattice[0]):
        return False
    height = abs(lattice[2] @ normal)
    fractions = np.sort((np.asarray(positions, dtype=float) @ np.linalg.inv(lattice))[:, 2] % 1.0)
    gaps = np.diff(np.concatenate([fractions, [fractions[0] + 1.0]]))  # the empty stretches, periodically
    return bool(gaps.max() * height >= min_vacuum)


def standard_kpath(
    lattice: np.ndarray,
    positions: np.ndarray | None = None,
    npoints: int = 100,
    path: str | None = None,
    two_dimensional: bool | None = None,
) -> KPath:
    """The standard path of the lattice with about ``npoints`` k-points, spread in proportion to segment length.

    ``path`` overrides the special-point sequence (ASE letters, ``,`` for a jump, e.g. ``"GMKG"``).
    ``two_dimensional`` defaults to :func:`is_two_dimensional` when ``positions`` are given, else 3D.
    """
    lattice = np.asarray(lattice, dtype=float)
    if two_dimensional is None:
        two_dimensional = positions is not None and is_two_dimensional(lattice, positions)
    bandpath = Cell(lattice).bandpath(path=path, npoints=0, pbc=[True, True, not two_dimensional])
    points = bandpath.special_points
    starts, ends, labels = [], [], []
    for branch in _split_path(bandpath.path):
        for a, b in zip(branch[:-1], branch[1:]):
            starts.append(points[a])
            ends.append(points[b])
            labels.append((_display(a), _display(b)))
    start, end = np.array(starts), np.array(ends)
    lengths = path_length(lattice, end - start)
    counts = tuple(max(2, int(round(npoints * length / lengths.sum()))) for length in lengths)
    return KPath(lattice, start, end, tuple(labels), counts)


def _split_path(path: str) -> list[list[str]]:
    """``"GXWK,UX"`` → [[G, X, W, K], [U, X]]; labels may carry digits (``H1``)."""
    branches = []
    for branch in path.split(","):
        names: list[str] = []
        for char in branch:
            if char.isdigit() and names:
                names[-1] += char
            else:
                names.append(char)
        branches.append(names)
    return branches


def _display(label: str) -> str:
    return GAMMA if label == "G" else label
