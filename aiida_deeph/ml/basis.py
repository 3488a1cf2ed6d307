"""Orbital bases as e3nn irreps, and the irreps a network must output for each element pair.

An element's basis is its list of shells ``[l, ...]`` in the DeepH order (``elements_orbital_map``); a shell of
angular momentum l is the irrep ``1x l`` with parity (−1)^l. The (l1, l2) sub-block of H_ij decomposes into the
irreps l3 = |l1 − l2| … l1 + l2, all with parity (−1)^(l1+l2) (Wigner–Eckart; DeepH-E3's ``irreps_from_l1l2``).
With spin–orbit coupling each of them is further coupled with spin 0 ⊕ 1, (l1⊗½)⊗(l2⊗½)* = (l1⊗l2)⊗(0⊕1);
the spin part is an axial vector, so the parity stays (−1)^(l1+l2).

:class:`OrbitalBasis` fixes the order of everything the networks and the graphs share: the element index of
each species, the pair type ``a * n_elements + b`` of an ordered element pair, the padded block size, and the
output irreps (the union over pair types of their needs, one channel per occurrence).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from e3nn import o3

if TYPE_CHECKING:
    from ..io.deeph_format import DeepHStructure

Shell = tuple[int, int, int]  # (l, first orbital, last orbital + 1) inside one atom's block


def shell_irreps(shells: Sequence[int]) -> o3.Irreps:
    """``[0, 0, 1, 2]`` → ``1x0e+1x0e+1x1o+1x2e``: one irrep per shell, in basis order (not simplified)."""
    return o3.Irreps([(1, (l, (-1) ** l)) for l in shells])


def coupled_irreps(l1: int, l2: int, parity: bool = True) -> o3.Irreps:
    """Irreps of an (l1, l2) block: l3 = |l1 − l2| … l1 + l2 with parity (−1)^(l1+l2), or (−1)^l3 if ``not parity``."""
    degrees = range(abs(l1 - l2), l1 + l2 + 1)
    return o3.Irreps([(1, (l3, (-1) ** (l1 + l2) if parity else (-1) ** l3)) for l3 in degrees])


def spin_coupled_irreps(l3: int, parity: int) -> o3.Irreps:
    """Irreps of one orbital irrep l3 coupled with spin 1 (the Pauli vector): |l3 − 1| … l3 + 1, same parity."""
    return o3.Irreps([(1, (l4, parity)) for l4 in range(abs(l3 - 1), l3 + 2)])


@dataclass(frozen=True)
class OutputSlot:
    """One output irrep of a block: where its coefficients live in the features and how it couples.

    ``column`` is the first feature index of this irrep copy (e3nn layout, ``2 l + 1`` components);
    ``spin`` is None for the orbital part, else the intermediate l3 that was coupled with spin 1 to give ``l``.
    """

    shell_i: Shell
    shell_j: Shell
    l: int
    column: int
    spin: int | None = None


class OrbitalBasis:
    """The orbital basis of every element a model knows, and the layouts derived from it.

    ``parity`` only changes the parity labels of the output irreps: a network that ignores parity (DeepH-2,
    SO(3) only) labels every irrep l with (−1)^l so that its l-channels line up with the output.
    """

    def __init__(self, elements_orbital_map: Mapping[str, Sequence[int]], spinful: bool = False) -> None:
        if not elements_orbital_map:
            raise ValueError("elements_orbital_map is empty")
        self.elements: tuple[str, ...] = tuple(elements_orbital_map)
        self.shells: dict[str, tuple[int, ...]] = {
            el: tuple(int(l) for l in ls) for el, ls in elements_orbital_map.items()
        }
        for element, shells in self.shells.items():
            if not shells or min(shells) < 0:
                raise ValueError(f"element {element}: invalid shells {list(shells)}")
        self.spinful = bool(spinful)

    @classmethod
    def from_structure(cls, structure: DeepHStructure) -> OrbitalBasis:
        """The basis of a :class:`~aiida_deeph.io.DeepHStructure` (its elements, shells and spin)."""
        return cls(structure.elements_orbital_map, spinful=structure.spinful)

    def __repr__(self) -> str:
        shells = ", ".join(f"{el}: {list(ls)}" for el, ls in self.shells.items())
        return f"OrbitalBasis({{{shells}}}, spinful={self.spinful})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrbitalBasis) and (self.shells, self.spinful) == (other.shells, other.spinful)

    # --- sizes ---------------------------------------------------------------------------------------------------
    @property
    def num_elements(self) -> int:
        return len(self.elements)

    @property
    def num_pair_types(self) -> int:
        return self.num_elements**2

    def element_index(self, element: str) -> int:
        try:
            return self.elements.index(element)
        except ValueError:
            raise ValueError(f"element {element!r} is not in the basis ({', '.join(self.elements)})") from None

    def num_orbitals(self, element: str) -> int:
        return sum(2 * l + 1 for l in self.shells[element])

    @property
    def block_size(self) -> int:
        """Rows (= columns) of a padded block: the largest atom, doubled with spin."""
        return max(self.num_orbitals(el) for el in self.elements) * (2 if self.spinful else 1)

    @property
    def lmax(self) -> int:
        return max(max(shells) for shells in self.shells.values())

    @property
    def required_lmax(self) -> int:
        """Smallest feature L_max that can express every block: 2·l_max, plus 1 with spin–orbit coupling."""
        return 2 * self.lmax + (1 if self.spinful else 0)

    def irreps(self, element: str) -> o3.Irreps:
        return shell_irreps(self.shells[element])

    def pair_types(self) -> Iterator[tuple[int, str, str]]:
        """``(pair_type, element_i, element_j)`` for every ordered element pair."""
        for a, el_a in enumerate(self.elements):
            for b, el_b in enumerate(self.elements):
                yield a * self.num_elements + b, el_a, el_b

    # --- output irreps ---------------------------------------------------------------------------------------------
    def _shells_with_offsets(self, element: str) -> list[Shell]:
        result, start = [], 0
        for l in self.shells[element]:
            result.append((l, start, start + 2 * l + 1))
            start += 2 * l + 1
        return result

    def _pair_irreps(
        self, element_i: str, element_j: str, parity: bool
    ) -> list[tuple[Shell, Shell, int, int, int | None]]:
        """``(shell_i, shell_j, l, p, spin)`` for each output irrep of the pair, in a fixed order."""
        result = []
        for shell_i in self._shells_with_offsets(element_i):
            for shell_j in self._shells_with_offsets(element_j):
                l1, l2 = shell_i[0], shell_j[0]
                for _, (l3, p3) in coupled_irreps(l1, l2, parity):
                    result.append((shell_i, shell_j, l3, p3, None))
                if self.spinful:
                    for l3 in range(abs(l1 - l2), l1 + l2 + 1):
                        p3 = (-1) ** (l1 + l2)
                        for _, (l4, p4) in spin_coupled_irreps(l3, p3):
                            result.append((shell_i, shell_j, l4, p4 if parity else (-1) ** l4, l3))
        return result

    def output_irreps(self, parity: bool = True) -> o3.Irreps:
        """Per-edge irreps a network outputs (real and imaginary parts each, with spin): for every (l, p), as many
        copies as the most demanding element pair needs. Sorted and simplified."""
        needed: Counter = Counter()
        for _, el_i, el_j in self.pair_types():
            counts = Counter((l, p) for _, _, l, p, _ in self._pair_irreps(el_i, el_j, parity))
            needed |= counts  # elementwise max
        return o3.Irreps([(mul, ir) for ir, mul in needed.items()]).sort().irreps.simplify()

    def output_slots(self, element_i: str, element_j: str, parity: bool = True) -> list[OutputSlot]:
        """Where each irrep of an (element_i, element_j) block reads its coefficients in :meth:`output_irreps`."""
        irreps = self.output_irreps(parity)
        first = {(mul_ir.ir.l, mul_ir.ir.p): s.start for mul_ir, s in zip(irreps, irreps.slices())}
        used: Counter = Counter()
        slots = []
        for shell_i, shell_j, l, p, spin in self._pair_irreps(element_i, element_j, parity):
            column = first[(l, p)] + used[(l, p)] * (2 * l + 1)
            used[(l, p)] += 1
            slots.append(OutputSlot(shell_i, shell_j, l, column, spin))
        return slots
