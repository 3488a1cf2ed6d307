"""``deeph.orbital``: a numerical atomic-orbital basis file, and ``deeph.orbital.family``: one per element.

An :class:`OrbitalData` holds an OpenMX ``.pao`` or an ABACUS ``.orb`` file with what the CalcJobs need from its
header: the element, the l of each radial function used (the *shells*, in the code's order), the cutoff radius and
the code. An ABACUS ``.orb`` file is a basis: every radial function in it is used. An OpenMX ``.pao`` file is a
library of ``PAO.Mul`` radial functions per l up to ``PAO.Lmax``, from which a basis string such as
``Fe6.0S-s2p2d1`` selects the first few per l; so a ``.pao`` needs that selection (``basis``).

:class:`OrbitalFamily` groups one :class:`OrbitalData` per element, like aiida-pseudo's families do for
pseudopotentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from aiida import orm
from aiida.common.exceptions import NotExistent
from ase.data import chemical_symbols

from aiida_deeph.io.abacus import read_orb_header
from aiida_deeph.io.deeph_format import DeepHFormatError
from aiida_deeph.io.openmx import SHELL_LETTERS, basis_shells

CODE_OF_SUFFIX = {".pao": "openmx", ".orb": "abacus"}
ORB_CUTOFF = re.compile(r"^\s*Radius Cutoff\(a\.u\.\)\s+(\S+)", re.M)


class OrbitalData(orm.SinglefileData):
    """A ``.pao`` (OpenMX) or ``.orb`` (ABACUS) basis file; attributes ``element``, ``shells``, ``cutoff_radius``
    (Bohr), ``code`` and, for OpenMX, ``basis_name`` (the species basis string written to the input).

    :param file: path or binary stream of the file; its name must end in ``.pao`` or ``.orb``.
    :param basis: OpenMX only, required: the radial functions used, ``s2p2d1`` or the full ``Fe6.0S-s2p2d1``.
    """

    def __init__(self, file: str | os.PathLike, filename: str | None = None, *, basis: str | None = None, **kwargs):
        super().__init__(file, filename=filename, **kwargs)
        suffix = Path(self.filename).suffix.lower()
        if suffix not in CODE_OF_SUFFIX:
            raise ValueError(f"{self.filename}: an orbital file ends in .pao (OpenMX) or .orb (ABACUS)")
        with self.as_path() as path:
            if suffix == ".orb":
                if basis is not None:
                    raise ValueError(f"{self.filename}: an ABACUS .orb file fixes its own basis; do not give `basis`")
                header = _orb_header(path)
            else:
                header = _pao_header(path, basis)
        header["code"] = CODE_OF_SUFFIX[suffix]
        for key, value in header.items():
            self.base.attributes.set(key, value)

    @property
    def element(self) -> str:
        return self.base.attributes.get("element")

    @property
    def shells(self) -> list[int]:
        """l of each radial function of the basis, in the code's order."""
        return self.base.attributes.get("shells")

    @property
    def cutoff_radius(self) -> float:
        """Cutoff radius of the radial functions, Bohr."""
        return self.base.attributes.get("cutoff_radius")

    @property
    def code(self) -> str:
        """``openmx`` or ``abacus``."""
        return self.base.attributes.get("code")

    @property
    def basis_name(self) -> str:
        """OpenMX basis string of the species definition, e.g. ``Fe6.0S-s2p2d1``."""
        if self.code != "openmx":
            raise ValueError(f"{self.filename} is an ABACUS orbital file; it has no OpenMX basis string")
        return self.base.attributes.get("basis_name")


def _orb_header(path: Path) -> dict:
    try:
        element, shells = read_orb_header(path)
        cutoff = ORB_CUTOFF.search(path.read_text(encoding="utf-8")[:4000])
    except (DeepHFormatError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from exc
    if element not in chemical_symbols[1:]:
        raise ValueError(f"{path.name}: header element {element!r} is not a chemical element")
    if cutoff is None:
        raise ValueError(f"{path.name}: no 'Radius Cutoff(a.u.)' line in the header")
    return {"element": element, "shells": shells, "cutoff_radius": float(cutoff[1])}


def _pao_header(path: Path, basis: str | None) -> dict:
    """Element, cutoff and selected shells of a ``.pao`` file, checking the selection against its header."""
    if not basis:
        raise ValueError(f"{path.name}: a .pao file needs `basis`, the radial functions used (e.g. 's2p2d1')")
    stem = path.stem
    prefix, _, spec = basis.rpartition("-")
    if prefix and prefix != stem:
        raise ValueError(f"{path.name}: basis {basis!r} names PAO file {prefix}.pao")
    try:
        text = path.read_text(encoding="utf-8")
        shells = basis_shells(spec)
    except (DeepHFormatError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name}: {exc}") from exc
    values = {key: _pao_number(text, key, path) for key in ("AtomSpecies", "PAO.Lmax", "PAO.Mul")}
    number, lmax, mul = (int(values[k]) for k in ("AtomSpecies", "PAO.Lmax", "PAO.Mul"))
    if not 0 < number < len(chemical_symbols):
        raise ValueError(f"{path.name}: AtomSpecies {number} is not an atomic number")
    for l in set(shells):
        if l > lmax or shells.count(l) > mul:
            raise ValueError(
                f"{path.name}: basis {spec!r} asks for {shells.count(l)} {SHELL_LETTERS[l]} functions, the file has "
                f"{mul if l <= lmax else 0} (PAO.Lmax {lmax}, PAO.Mul {mul})"
            )
        if f"<pseudo.atomic.orbitals.L={l}" not in text:
            raise ValueError(f"{path.name}: no <pseudo.atomic.orbitals.L={l} block; the file is cut or corrupt")
    cutoff = re.search(r"^\s*radial\.cutoff\.pao\s+(\S+)", text, re.M) or re.search(r"(\d+(?:\.\d+)?)", stem)
    if cutoff is None:
        raise ValueError(f"{path.name}: no radial.cutoff.pao line and no cutoff in the file name")
    return {
        "element": chemical_symbols[number],
        "shells": shells,
        "cutoff_radius": float(cutoff[1]),
        "basis_name": f"{stem}-{spec}",
    }


def _pao_number(text: str, key: str, path: Path) -> float:
    match = re.search(rf"^\s*{re.escape(key)}\s+(\S+)", text, re.M)
    try:
        return float(match[1])
    except (TypeError, ValueError):
        raise ValueError(f"{path.name}: no numeric '{key}' line in the header; not a .pao file") from None


class OrbitalFamily(orm.Group):
    """A set of :class:`OrbitalData`, at most one per element, for one code."""

    @classmethod
    def create_from_folder(
        cls, folder: str | os.PathLike, label: str, *, description: str = "",
        basis: Mapping[str, str] | None = None,
    ) -> "OrbitalFamily":
        """Store a family from a folder of ``.orb`` files (all of them, subfolders included), or of ``.pao`` files.

        :param basis: for ``.pao`` folders, element → OpenMX basis string (``{"Fe": "Fe6.0S-s2p2d1"}``); it picks the
            file (``Fe6.0S.pao``) and its radial functions. ``.orb`` folders need none.
        :raises ValueError: if the label exists, files are missing or unreadable, or an element appears twice.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder")
        if cls.collection.count(filters={"label": label}):
            raise ValueError(f"the orbital family {label!r} already exists")
        orbitals = [_pao_node(folder, el, name) for el, name in basis.items()] if basis else _orb_nodes(folder)
        _check_unique_elements(orbitals)
        family = cls(label=label, description=description).store()
        family.add_nodes([orbital.store() for orbital in orbitals])
        return family

    def add_nodes(self, nodes: OrbitalData | Iterable[OrbitalData]) -> None:
        nodes = [nodes] if isinstance(nodes, orm.Node) else list(nodes)
        if any(not isinstance(node, OrbitalData) for node in nodes):
            raise TypeError("an orbital family holds OrbitalData nodes only")
        _check_unique_elements([*self.nodes, *nodes])
        super().add_nodes(nodes)

    @property
    def orbitals(self) -> dict[str, OrbitalData]:
        """Element → orbital file."""
        return {node.element: node for node in self.nodes}

    @property
    def elements(self) -> list[str]:
        return sorted(self.orbitals)

    def get_orbital(self, element: str) -> OrbitalData:
        try:
            return self.orbitals[element]
        except KeyError:
            raise ValueError(f"orbital family {self.label!r} has no orbital file for {element}") from None

    def get_orbitals(
        self, *, elements: Iterable[str] | None = None, structure: orm.StructureData | None = None
    ) -> dict[str, OrbitalData]:
        """Element → orbital file for ``elements`` or the elements of ``structure``."""
        if (elements is None) == (structure is None):
            raise ValueError("give exactly one of `elements` and `structure`")
        wanted = list(dict.fromkeys(elements)) if structure is None else sorted(structure.get_symbols_set())
        missing = [el for el in wanted if el not in self.orbitals]
        if missing:
            raise ValueError(f"orbital family {self.label!r} has no orbital file for {', '.join(sorted(missing))}")
        return {el: self.orbitals[el] for el in wanted}


def load_orbital_family(label: str) -> OrbitalFamily:
    """The stored family ``label``; a clear ValueError when it does not exist."""
    try:
        family = orm.load_group(label=label)
    except NotExistent:
        raise ValueError(
            f"orbital family {label!r} is not installed. Create it from a folder of .orb files, or of .pao files "
            f"with the basis per element: OrbitalFamily.create_from_folder(folder, {label!r}[, basis={{'C': "
            "'C6.0-s2p2d1'}])  (from aiida_deeph.data.orbital import OrbitalFamily)"
        ) from None
    if not isinstance(family, OrbitalFamily):
        raise ValueError(f"group {label!r} is a {type(family).__name__}, not an orbital family")
    return family


def _orb_nodes(folder: Path) -> list[OrbitalData]:
    paths = sorted(folder.rglob("*.orb"))
    if not paths:
        raise ValueError(f"{folder}: no .orb files; a folder of .pao files needs `basis` (element → basis string)")
    return [OrbitalData(path) for path in paths]


def _pao_node(folder: Path, element: str, basis: str) -> OrbitalData:
    stem, _, spec = basis.rpartition("-")
    found = sorted(folder.rglob(f"{stem}.pao")) if stem and spec else []
    if not found:
        raise ValueError(f"{folder}: no {stem or basis}.pao for basis {basis!r} (expected e.g. 'Fe6.0S-s2p2d1')")
    orbital = OrbitalData(found[0], basis=basis)
    if orbital.element != element:
        raise ValueError(f"{found[0].name} is a {orbital.element} basis, given for {element}")
    return orbital


def _check_unique_elements(orbitals: list[OrbitalData]) -> None:
    seen: dict[str, str] = {}
    for orbital in orbitals:
        if orbital.element in seen:
            raise ValueError(f"two orbital files for {orbital.element}: {seen[orbital.element]} and {orbital.filename}")
        seen[orbital.element] = orbital.filename
