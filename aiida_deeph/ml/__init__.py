"""DeepH-2 / DeepH-E3 Hamiltonian models in PyTorch + e3nn. Importable without AiiDA.

Typical use (what a training or inference engine does)::

    from aiida_deeph.io import DeepHStructure
    from aiida_deeph.ml import OrbitalBasis, build_model, graph_from_structure, unpack_blocks

    structure = DeepHStructure.read(folder)
    basis = OrbitalBasis.from_structure(structure)          # or the union basis of a whole data set
    graph = graph_from_structure(structure, basis)          # edges = the DFT atom pairs; targets + mask from H
    model = build_model({"model": "deeph2", "channels": 32}, basis)
    blocks = model(graph)                                   # (E, B, B), packed exactly like graph.target
    loss = ((blocks - graph.target).abs() ** 2 * graph.mask).sum() / graph.mask.sum()
    hamiltonian = unpack_blocks(blocks, graph)              # -> aiida_deeph.io.BlockMatrix

Modules: :mod:`.basis` (orbital irreps), :mod:`.wigner` (Wigner-D, (y, z, x) convention, edge frames),
:mod:`.graph` (graphs, packing, neighbour search), :mod:`.wigner_eckart` (irreps → blocks), :mod:`.models`.
"""

from .basis import OrbitalBasis
from .graph import CrystalGraph, build_graph, collate, find_pairs, graph_from_structure, unpack_blocks
from .models import MODEL_DEFAULTS, DeepH2, DeepHE3, build_model
from .wigner import orbital_rotation, spin_rotation, wigner_D
from .wigner_eckart import WignerEckartHead

__all__ = [
    "MODEL_DEFAULTS",
    "CrystalGraph",
    "DeepH2",
    "DeepHE3",
    "OrbitalBasis",
    "WignerEckartHead",
    "build_graph",
    "build_model",
    "collate",
    "find_pairs",
    "graph_from_structure",
    "orbital_rotation",
    "spin_rotation",
    "unpack_blocks",
    "wigner_D",
]
