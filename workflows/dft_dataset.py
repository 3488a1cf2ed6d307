"""DFT training data on the embedded engine: perturbed supercells (or shifted bilayers) → DeepH folders.

    verdi run workflows/dft_dataset.py graphene --supercell 3 --samples 24 --out run/graphene_3x3
    verdi run workflows/dft_dataset.py bilayer --supercell 2 --shifts 5 --displacement 0.05 --out run/bilayer_2x2

Each structure runs ``deeph.cp2k.base`` (protocol ``--protocol``, default ``fast``) and its ``hamiltonian`` output is
exported to ``OUT/<index>`` in the DeepH format. Rerunning skips the structures already exported, so an interrupted
campaign resumes where it stopped; every exported folder is an output of a WorkChain in the provenance graph
(``OUT/<index>/aiida.json`` gives its pk and uuid).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aiida import orm
from aiida.engine import run_get_node
from ase import Atoms
from ase.build import graphene

from aiida_deeph.structures import default_distance, interlayer_shift_grid, perturbed_supercells, primitive_layer
from aiida_deeph.workflows.cp2k_base import Cp2kBaseWorkChain

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("kind", choices=["graphene", "bilayer"])
parser.add_argument("--supercell", type=int, default=3)
parser.add_argument("--samples", type=int, default=24, help="graphene: number of perturbed cells")
parser.add_argument("--shifts", type=int, default=5, help="bilayer: n for an n×n grid of interlayer shifts")
parser.add_argument("--displacement", type=float, default=0.1, help="uniform random displacement bound, Å")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--protocol", default="fast")
parser.add_argument("--code", default="cp2k@localhost-deeph")
parser.add_argument("--out", required=True)
args = parser.parse_args()


def structures() -> list[Atoms]:
    if args.kind == "graphene":
        layer = graphene(a=2.46, vacuum=7.5)
        layer.pbc = (True, True, False)
        n = args.supercell
        return perturbed_supercells(layer, (n, n, 1), args.samples, displacement=args.displacement, seed=args.seed)
    # AA-stacked bilayer; the shift grid then covers every stacking (AB, SP, ...).
    bottom = primitive_layer("graphene").repeat((args.supercell, args.supercell, 1))
    top = bottom.copy()
    top.positions[:, 2] += default_distance("graphene")
    bilayer = bottom + top
    bilayer.center(vacuum=7.5, axis=2)
    bilayer.pbc = (True, True, False)
    return interlayer_shift_grid(bilayer, args.shifts, args.shifts, displacement=args.displacement, seed=args.seed)


out = Path(args.out)
code = orm.load_code(args.code)
for index, atoms in enumerate(structures()):
    folder = out / f"{index:04d}"
    if (folder / "hamiltonian.h5").exists():
        continue
    start = time.perf_counter()
    builder = Cp2kBaseWorkChain.get_builder_from_protocol(code, orm.StructureData(ase=atoms), args.protocol)
    results, node = run_get_node(builder)
    if not node.is_finished_ok:
        print(f"[{index:04d}] Cp2kBaseWorkChain<{node.pk}> failed ({node.exit_status}); excluded")
        continue
    results["hamiltonian"].export_deeph(folder)
    (folder / "aiida.json").write_text(json.dumps({"workchain": node.uuid, "pk": node.pk,
                                                   "hamiltonian": results["hamiltonian"].uuid}))
    print(f"[{index:04d}] {len(atoms)} atoms, {results['hamiltonian'].npairs} pairs, "
          f"{time.perf_counter() - start:.1f} s → {folder}")
