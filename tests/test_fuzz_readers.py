"""Every reader of the project fed seeded truncations and byte flips of real files.

A mutation must end in the reader's own error class, with a message naming the file, or in output that passes
validation (finite numbers, consistent shapes and indices): never another exception and never a hang (each call runs
under an alarm; pytest-timeout's thread method is the backstop for a hang inside C code).

Seeds: the recorded OpenMX, ABACUS and DeepH files of the shared fixtures, the legacy export of the DeepH one, and a
tiny model trained here with the engine's own functions. No CP2K recording is among the fixtures, so its seeds are
written here in CP2K's own layouts: an excerpt of a real CP2K 2023.1 output (the lines the reader uses) and CSR files
of the analytic MOLOPT overlap of graphene. Half the byte flips land in the first 4 KiB, where headers and tables are.
"""

from __future__ import annotations

import shutil
import signal
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aiida_deeph.io import abacus, cp2k, openmx
from aiida_deeph.io.conventions import from_standard
from aiida_deeph.io.deeph_format import BlockMatrix, DeepHFormatError, DeepHStructure
from aiida_deeph.io.legacy_format import LegacyFormatError, read_legacy_blocks, write_legacy
from aiida_deeph.io.overlap import analytic_overlap
from aiida_deeph.ml.checkpoint import CorruptedFileError, load_checkpoint, load_model
from aiida_deeph.ml.config import config_from_dict
from aiida_deeph.ml.dataset import DatasetError, GraphDataset, preprocess
from aiida_deeph.ml.graph import CrystalGraph
from aiida_deeph.ml.train import train

pytestmark = pytest.mark.timeout(300, method="thread")

MUTATIONS = 30
SECONDS_PER_CALL = 20
HEAD_BYTES = 4096
MOS2 = Path("abacus/MoS2_v3.10_deeph_dock")


# --- mutations and the guard ------------------------------------------------------------------------------------------
def mutations(data: bytes, rng: np.random.Generator, count: int = MUTATIONS) -> Iterator[tuple[str, bytes]]:
    """Alternately a truncation and 1–4 flipped bytes (anywhere, or in the first HEAD_BYTES)."""
    for n in range(count):
        if n % 2 == 0:
            cut = int(rng.integers(0, len(data)))
            yield f"truncated to {cut} of {len(data)} bytes", data[:cut]
            continue
        window = len(data) if n % 4 == 1 else min(len(data), HEAD_BYTES)
        positions = sorted(int(p) for p in rng.integers(0, window, size=int(rng.integers(1, 5))))
        mutated = bytearray(data)
        for position in positions:
            mutated[position] ^= int(rng.integers(1, 256))
        yield f"bytes {positions} flipped", bytes(mutated)


class ReaderHang(Exception):
    """A reader call ran past SECONDS_PER_CALL."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum, frame):
        raise ReaderHang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- validation of what a reader accepted -----------------------------------------------------------------------------
def assert_finite(*arrays: Any) -> None:
    for array in arrays:
        assert np.all(np.isfinite(np.asarray(array))), "non-finite numbers accepted"


def check_blocks(structure: DeepHStructure, matrix: BlockMatrix | None, factor: int) -> None:
    if matrix is None:
        return
    assert_finite(matrix.entries)
    sizes = structure.orbitals_per_atom()
    atoms = matrix.atom_pairs[:, 3:]
    assert atoms.min(initial=0) >= 0 and atoms.max(initial=0) < structure.natoms
    expected = factor * np.stack([sizes[atoms[:, 0]], sizes[atoms[:, 1]]], axis=1)
    assert np.array_equal(matrix.chunk_shapes, expected.reshape(-1, 2))
    assert len(matrix.index) == len(matrix), "an atom pair is listed twice"


def check_structure(structure: DeepHStructure) -> None:
    assert_finite(structure.lattice, structure.positions, structure.fermi_energy_eV)
    assert abs(np.linalg.det(structure.lattice)) > 0
    assert all(l >= 0 for shells in structure.elements_orbital_map.values() for l in shells)
    check_blocks(structure, structure.overlap, 1)
    check_blocks(structure, structure.hamiltonian, 2 if structure.spinful else 1)


def check_cp2k_output(output: cp2k.Cp2kOutput) -> None:
    assert_finite(*(x for x in (output.energy_eV, output.fermi_energy_eV, output.wall_time_s) if x is not None))
    assert all(len(image) == 3 for image in output.images)
    assert all(0 <= l < len(cp2k.L_LETTERS) for shells in output.kind_shells.values() for l in shells)


def check_scfout(scf: openmx.ScfOut) -> None:
    assert_finite(scf.lattice, scf.positions, scf.chemical_potential, *scf.olp, *scf.hks[0])
    shapes = [(scf.orbitals_per_atom[i], scf.orbitals_per_atom[j]) for _, _, _, i, j in scf.pairs]
    assert [block.shape for block in scf.olp] == shapes


def check_openmx_out(out: openmx.OpenMXOut) -> None:
    assert_finite(out.chemical_potential, out.fractional_coordinates, *out.scf_band_energies)
    assert out.fractional_coordinates.shape == (len(out.species), 3)


def check_abacus_csr(csr: abacus.AbacusCsr) -> None:
    assert csr.dimension > 0
    for matrix in csr.matrices.values():
        assert matrix.shape == (csr.dimension, csr.dimension)
        assert_finite(matrix.data)


def check_abacus_log(log: abacus.AbacusLog) -> None:
    assert_finite(log.lattice_vectors, log.coordinates, log.lattice_constant_angstrom)
    assert log.coordinates.shape == (len(log.labels), 3) and log.nspin in (1, 2, 4)


def check_stru(stru: abacus.AbacusStru) -> None:
    assert_finite(stru.coordinates, stru.lattice_constant)
    assert stru.coordinates.shape == (len(stru.labels), 3)


def check_legacy(blocks: dict) -> None:
    for (rx, ry, rz, i, j), block in blocks.items():
        assert i >= 0 and j >= 0 and block.ndim == 2
        assert_finite(block)


def check_model(model: torch.nn.Module) -> None:
    assert all(torch.isfinite(p).all() for p in model.parameters())


def check_graph(graph: CrystalGraph) -> None:
    assert torch.isfinite(graph.target).all() and torch.isfinite(graph.edge_vec).all()


def anything(_: Any) -> None:
    """Readers of plain key/value text: any dict of strings is a valid result."""


# --- seeds ------------------------------------------------------------------------------------------------------------
GRAPHENE_CELL = np.array([[2.46, 0.0, 0.0], [-1.23, 2.46 * 3**0.5 / 2, 0.0], [0.0, 0.0, 12.0]])
GRAPHENE_FRACTIONAL = np.array([[0.0, 0.0, 0.0], [1 / 3, -1 / 3, 0.0]])  # already CP2K-wrapped: no shifts
CP2K_HEADER = """\
 CP2K| version string:                                       CP2K version 2023.1
 CP2K| source code revision number:                                  git:b888bd8

 ATOMIC KIND INFORMATION

  1. Atomic kind: C                                     Number of atoms:       2

     Orbital Basis Set                                         SZV-MOLOPT-SR-GTH

       Number of orbital shell sets:                                           1
       Number of orbital shells:                                               2
       Number of spherical basis functions:                                    4

                        Set   Shell   Orbital            Exponent    Coefficient

                          1       1    2s                5.605331       0.322515
                                                         2.113016       0.213043
                          1       2    3px               5.605331      -0.703879
                                                         2.113016      -0.642521
                          1       2    3py               5.605331      -0.703879
                          1       2    3pz               5.605331      -0.703879

     GTH Potential information for                                       GTH-PBE

  *** SCF run converged in    21 steps ***

  Fermi energy:                                                -0.02606332743318

"""
CP2K_FOOTER = """
 ENERGY| Total FORCE_EVAL ( QS ) energy [a.u.]:              -45.375653288703525

 CP2K                                 1  1.0    0.013    0.014   13.709   13.710

 The number of warnings for this run is : 1

  **** **** ******  **  PROGRAM ENDED AT                 2026-11-25 15:11:40.136
"""
CP2K_SHELLS = [0, 1]
KS_PER_OVERLAP = -0.5  # Hartree: H = −0.5 S keeps H Hermitian exactly like S


@dataclass(frozen=True)
class Cp2kRun:
    """A CP2K run's files in ``folder`` (aiida.out and the CSR files) and the structure the parser is given."""

    folder: Path
    lattice: np.ndarray
    species: list[str]
    positions: np.ndarray
    pbc: tuple[bool, bool, bool] = (True, True, False)

    def convert(self) -> tuple[DeepHStructure, dict]:
        output = cp2k.read_cp2k_output(self.folder / "aiida.out")
        return cp2k.cp2k_to_deeph(self.folder, self.lattice, self.species, self.positions, self.pbc, output)


def _image_table(kind: str, images: list[tuple[int, int, int]]) -> str:
    rows = "".join(f"{n:10d}{x:7d}{y:7d}{z:7d}\n" for n, (x, y, z) in enumerate(images, start=1))
    return f" {kind} CSR write|  {len(images)} periodic images\n      Number    X      Y      Z\n{rows}\n"


def _csr_text(matrix: np.ndarray) -> str:
    rows, cols = np.nonzero(matrix)
    return "".join(f"{r + 1:8d}{c + 1:8d} {matrix[r, c]: .14E}\n" for r, c in zip(rows, cols))


def write_cp2k_run(folder: Path) -> Cp2kRun:
    """Graphene (2 C, SZV-MOLOPT-SR-GTH) as CP2K 2023.1 leaves it: main output and one S and KS CSR file per image."""
    folder.mkdir(parents=True, exist_ok=True)
    positions = GRAPHENE_FRACTIONAL @ GRAPHENE_CELL
    overlap = analytic_overlap(GRAPHENE_CELL, ["C", "C"], positions, "SZV-MOLOPT-SR-GTH")
    images = sorted({tuple(int(x) for x in row[:3]) for row in overlap.atom_pairs}, key=lambda r: (r != (0, 0, 0), r))
    size = 4
    for n, image in enumerate(images, start=1):
        matrix = np.zeros((2 * size, 2 * size))
        for (rx, ry, rz, i, j), block in overlap.items():
            if (rx, ry, rz) == image:
                matrix[i * size:(i + 1) * size, j * size:(j + 1) * size] = from_standard(
                    block, "cp2k", CP2K_SHELLS, CP2K_SHELLS)
        cp2k.csr_path(folder, "S", 1, n).write_text(_csr_text(matrix))
        cp2k.csr_path(folder, "KS", 1, n).write_text(_csr_text(KS_PER_OVERLAP * matrix))
    text = CP2K_HEADER + _image_table("KS", images) + _image_table(" S", images) + CP2K_FOOTER
    (folder / "aiida.out").write_text(text)
    return Cp2kRun(folder, GRAPHENE_CELL, ["C", "C"], positions)


TINY_MODEL = {"model": "deeph2", "lmax": 1, "channels": 4, "num_blocks": 1, "num_heads": 1, "num_radial": 4,
              "radial_hidden": 8}


def s_shells_only(structure: DeepHStructure) -> DeepHStructure:
    """The first (s) orbital of every atom: a real but tiny training structure."""
    def first(matrix: BlockMatrix) -> BlockMatrix:
        return BlockMatrix.from_blocks({key: block[:1, :1] for key, block in matrix.items()})

    return DeepHStructure(structure.lattice, structure.species, structure.positions,
                          {element: [0] for element in structure.elements}, structure.fermi_energy_eV,
                          hamiltonian=first(structure.hamiltonian), overlap=first(structure.overlap))


def train_tiny_model(source: Path, root: Path) -> Path:
    """One epoch of a tiny DeepH-2 on the s block of the real MoS2: ``root`` gets dataset/ and outputs/."""
    torch.set_num_threads(1)
    s_shells_only(DeepHStructure.read(source)).write(root / "source")
    dataset = preprocess([root / "source"], root / "dataset", (1.0, 0.0, 0.0))
    config = config_from_dict({"system": {"device": "cpu", "seed": 0, "num_threads": 1},
                               "data": {"dataset_dir": str(dataset), "outputs_dir": str(root / "outputs")},
                               "model": TINY_MODEL, "process": {"train": {"max_epochs": 1, "progress": False}}})
    assert train(config).exit_code == 0
    return root


def writable_copy(source: Path, target: Path) -> Path:
    """The fixtures are read-only; the mutated copies must not be."""
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture(scope="module")
def workspaces(dft_fixtures: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    spaces = {name: writable_copy(dft_fixtures / source, root / name) for name, source in (
        ("fe", "openmx/fe_bcc_spin_sli43"), ("mote2", "openmx/MoTe2_deeph_dock_textonly"), ("mos2", MOS2),
        ("mos2_v36", "abacus/MoS2_v3.6_deeptb_logonly"), ("carbon", "abacus/C_nspin4_207_NO_KP_OHS_SPIN4"))}
    spaces["deeph"] = spaces["mos2"] / "deeph_ref"
    spaces["legacy"] = write_legacy(DeepHStructure.read(spaces["deeph"]), root / "legacy")
    spaces["cp2k"] = write_cp2k_run(root / "cp2k").folder
    spaces["training"] = train_tiny_model(spaces["deeph"], root / "training")
    return spaces


# --- the readers ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """``read(workspace)`` after mutating ``workspace/file``; ``errors``: the reader's own error classes."""

    name: str
    workspace: str
    file: str
    read: Callable[[Path], Any]
    errors: tuple[type[Exception], ...]
    check: Callable[[Any], None]


def _first_graph(folder: Path) -> CrystalGraph:
    """A dataset is read lazily: its first graph is where the graph file gets loaded."""
    return GraphDataset(folder)[0]


def _cp2k_convert(folder: Path) -> DeepHStructure:
    run = Cp2kRun(folder, GRAPHENE_CELL, ["C", "C"], GRAPHENE_FRACTIONAL @ GRAPHENE_CELL)
    return run.convert()[0]


CP2K = (cp2k.Cp2kOutputError,)
OPENMX = (openmx.OpenMXFormatError,)
ABACUS = (abacus.AbacusFormatError,)
DEEPH = (DeepHFormatError,)
ML = (CorruptedFileError,)
DATASET = (DatasetError, CorruptedFileError)
CASES = [
    Case("cp2k csr", "cp2k", "aiida-S_SPIN_1_R_1-1_0.csr", lambda w: cp2k.read_csr(w / "aiida-S_SPIN_1_R_1-1_0.csr", 8),
         CP2K, assert_finite),
    Case("cp2k output", "cp2k", "aiida.out", lambda w: cp2k.read_cp2k_output(w / "aiida.out"), CP2K,
         check_cp2k_output),
    Case("cp2k output to deeph", "cp2k", "aiida.out", _cp2k_convert, CP2K, check_structure),
    Case("cp2k home-cell S to deeph", "cp2k", "aiida-S_SPIN_1_R_1-1_0.csr", _cp2k_convert, CP2K, check_structure),
    Case("cp2k KS image to deeph", "cp2k", "aiida-KS_SPIN_1_R_2-1_0.csr", _cp2k_convert, CP2K, check_structure),
    Case("openmx scfout", "fe", "fe.scfout", lambda w: openmx.read_scfout(w / "fe.scfout"), OPENMX, check_scfout),
    Case("openmx scfout to deeph", "fe", "fe.scfout", lambda w: openmx.openmx_to_deeph(w / "fe.scfout"), OPENMX,
         check_structure),
    Case("openmx out", "fe", "fe.out", lambda w: openmx.read_openmx_out(w / "fe.out"), OPENMX, check_openmx_out),
    Case("openmx out mote2", "mote2", "openmx.out", lambda w: openmx.read_openmx_out(w / "openmx.out"), OPENMX,
         check_openmx_out),
    Case("openmx dat", "fe", "Febcc.dat", lambda w: openmx.read_openmx_dat(w / "Febcc.dat").unit_vectors(), OPENMX,
         assert_finite),
    Case("abacus csr", "mos2", "OUT.ABACUS/data-HR-sparse_SPIN0.csr",
         lambda w: abacus.read_csr(w / "OUT.ABACUS/data-HR-sparse_SPIN0.csr"), ABACUS, check_abacus_csr),
    Case("abacus csr nspin 4", "carbon", "data-HR-sparse_SPIN0.csr.ref",
         lambda w: abacus.read_csr(w / "data-HR-sparse_SPIN0.csr.ref"), ABACUS, check_abacus_csr),
    Case("abacus log", "mos2", "OUT.ABACUS/running_scf.log",
         lambda w: abacus.read_running_log(w / "OUT.ABACUS/running_scf.log"), ABACUS, check_abacus_log),
    Case("abacus log v3.6", "mos2_v36", "OUT.ABACUS/running_scf.log",
         lambda w: abacus.read_running_log(w / "OUT.ABACUS/running_scf.log"), ABACUS, check_abacus_log),
    Case("abacus stru", "mos2", "STRU", lambda w: abacus.read_stru(w / "STRU"), ABACUS, check_stru),
    Case("abacus input", "mos2", "INPUT", lambda w: abacus.read_input(w / "INPUT"), ABACUS, anything),
    Case("abacus kpt", "mos2", "KPT", lambda w: abacus.read_kpt(w / "KPT"), ABACUS, anything),
    Case("abacus orb header", "mos2", "orbitals/S_DZP/S_gga_8au_100Ry_2s2p1d.orb",
         lambda w: abacus.read_orb_header(w / "orbitals/S_DZP/S_gga_8au_100Ry_2s2p1d.orb"), ABACUS, anything),
    Case("abacus to deeph", "mos2", "OUT.ABACUS/data-SR-sparse_SPIN0.csr", abacus.abacus_to_deeph, ABACUS,
         check_structure),
    Case("abacus stru to deeph", "mos2", "STRU", abacus.abacus_to_deeph, ABACUS, check_structure),
    Case("deeph hamiltonian.h5", "deeph", "hamiltonian.h5", DeepHStructure.read, DEEPH, check_structure),
    Case("deeph overlap.h5", "deeph", "overlap.h5", DeepHStructure.read, DEEPH, check_structure),
    Case("deeph info.json", "deeph", "info.json", DeepHStructure.read, DEEPH, check_structure),
    Case("deeph POSCAR", "deeph", "POSCAR", DeepHStructure.read, DEEPH, check_structure),
    Case("legacy hamiltonians.h5", "legacy", "hamiltonians.h5", lambda w: read_legacy_blocks(w / "hamiltonians.h5"),
         (LegacyFormatError,), check_legacy),
    Case("checkpoint", "training", "outputs/checkpoints/latest.pt",
         lambda w: load_checkpoint(w / "outputs/checkpoints/latest.pt"), ML, anything),
    *(Case(f"model {name}", "training", f"outputs/model/{name}", lambda w: load_model(w / "outputs/model"), ML,
           check_model) for name in ("weights.pt", "config.json", "basis.json")),
    *(Case(name, "training", f"dataset/{name}", lambda w: _first_graph(w / "dataset"), DATASET, check_graph)
      for name in ("dataset.json", "split.json", "graphs/000000.pt")),
]


def fuzz(case: Case, workspace: Path) -> Counter:
    """Run every mutation of ``case``; returns how many were refused and accepted."""
    target = workspace / case.file
    original = target.read_bytes()
    case.check(case.read(workspace))  # the seed itself is read and valid
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    outcomes: Counter = Counter()
    try:
        for label, data in mutations(original, rng):
            target.write_bytes(data)
            try:
                with time_limit(SECONDS_PER_CALL):
                    result = case.read(workspace)
            except case.errors as exc:
                assert target.name in str(exc) or str(workspace) in str(exc), f"{label}: {exc} names no file"
                outcomes["refused"] += 1
            except Exception as exc:  # noqa: BLE001  (anything else is the defect this test looks for)
                pytest.fail(f"{case.name}, {label}: {type(exc).__name__}: {exc}")
            else:
                case.check(result)
                outcomes["accepted"] += 1
    finally:
        target.write_bytes(original)
    return outcomes


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_mutations_end_in_the_readers_own_error_or_valid_output(case, workspaces):
    outcomes = fuzz(case, workspaces[case.workspace])
    print(f"{case.name}: {dict(outcomes)}")
    assert outcomes["refused"] + outcomes["accepted"] == MUTATIONS
    assert outcomes["refused"] > 0  # the mutations reached the reader
