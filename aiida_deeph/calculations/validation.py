"""Checks shared by the CalcJobs' spec validators, run before anything is submitted.

Each returns the message of the first problem it finds, or None. Names that end up in an input file or in a path of
the working directory (kind names, basis and pseudopotential names, file names, namespace keys) must be one plain
token: whitespace or a newline would inject lines into the CP2K, OpenMX and ABACUS inputs, and a slash or ``..``
would point outside the working directory. Keyword values must not break their line either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from aiida import orm
from ase.neighborlist import neighbor_list

MIN_INTERATOMIC_DISTANCE = 0.5  # Å; closer atoms are a structure error, not physics
NAME_PUNCTUATION = "_.+-"  # besides letters and digits; a name never starts with a dot, so is never "." or ".."
LINK_LABEL_PUNCTUATION = "_"  # namespace keys become AiiDA link labels
LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")  # what str.splitlines splits on


def name_error(name: Any, what: str, punctuation: str = NAME_PUNCTUATION) -> str | None:
    """``name`` must be a plain token of at most 128 letters, digits and ``punctuation``."""
    pattern = rf"[A-Za-z0-9_][A-Za-z0-9{re.escape(punctuation)}]{{0,127}}"
    if isinstance(name, str) and re.fullmatch(pattern, name):
        return None
    return (f"{what} {name!r} is not a plain name: use letters, digits and {' '.join(punctuation)} only (no spaces, "
            "quotes, slashes or line breaks)")


def names_error(names: Iterable[Any], what: str, punctuation: str = NAME_PUNCTUATION) -> str | None:
    return next((message for name in names if (message := name_error(name, what, punctuation))), None)


def line_break_error(values: Any, what: str) -> str | None:
    """No key or string value anywhere in the nested ``values`` holds a line break (one keyword, one line)."""
    if isinstance(values, str):
        return f"{what}: {values[:60]!r} holds a line break" if LINE_BREAKS.search(values) else None
    if isinstance(values, Mapping):
        items: Iterable[Any] = (x for pair in values.items() for x in pair)
    elif isinstance(values, (list, tuple)):
        items = values
    else:
        return None
    return next((message for item in items if (message := line_break_error(item, what))), None)


def atom_symbols(structure: orm.StructureData) -> list[str]:
    return [structure.get_kind(site.kind_name).symbol for site in structure.sites]


def grouping_error(structure: orm.StructureData) -> str | None:
    """Atoms grouped by element (the DeepH order), plain kind names, no alloy or vacancy kinds."""
    message = names_error(structure.get_kind_names(), "kind name")
    if message:
        return message
    if any(kind.is_alloy or kind.has_vacancies for kind in structure.kinds):
        return "alloy or vacancy kinds cannot be written to a DFT input"
    symbols = atom_symbols(structure)
    order = list(dict.fromkeys(symbols))
    if symbols != sorted(symbols, key=order.index):
        return (f"atoms must be grouped by element (the DeepH order), got {' '.join(symbols)}; "
                "sort them, e.g. with ase.build.sort")
    return None


def overlapping_atoms_error(structure: orm.StructureData) -> str | None:
    """No two atoms (periodic images included) closer than MIN_INTERATOMIC_DISTANCE."""
    first, second, distance = neighbor_list("ijd", structure.get_ase(), MIN_INTERATOMIC_DISTANCE)
    if not len(distance):
        return None
    n = int(np.argmin(distance))
    i, j = int(first[n]), int(second[n])
    which = f"atom {i} and a periodic image of itself" if i == j else f"atoms {i} and {j}"
    return f"{which} overlap: {distance[n]:.3f} Å apart (minimum {MIN_INTERATOMIC_DISTANCE} Å)"


def structure_error(structure: orm.StructureData) -> str | None:
    return grouping_error(structure) or overlapping_atoms_error(structure)


def kpoints_error(kpoints: orm.KpointsData, pbc: tuple[bool, bool, bool]) -> str | None:
    """A mesh of positive sizes, 1 along the non-periodic axes (no k-point dispersion there)."""
    try:
        mesh, _ = kpoints.get_kpoints_mesh()
    except AttributeError:
        return "kpoints must be a mesh (KpointsData.set_kpoints_mesh); explicit lists are not supported"
    if any(int(n) < 1 for n in mesh):
        return f"k-point mesh {list(mesh)} must be at least 1 along every direction"
    for axis, (n, periodic) in enumerate(zip(mesh, pbc)):
        if not periodic and n != 1:
            return f"k-point mesh {list(mesh)} samples non-periodic direction {'abc'[axis]}: use 1 there"
    return None
