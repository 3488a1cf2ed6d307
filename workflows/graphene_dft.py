"""Real CP2K DFT of a perturbed graphene supercell, written in the DeepH format.

    verdi run workflows/graphene_dft.py [--supercell 2] [--protocol fast] [--out run/graphene_dft]

Runs ``deeph.cp2k.base`` on the embedded CP2K engine (code ``cp2k@localhost-deeph``, made by
``aiida-deeph setup``), then exports the ``hamiltonian`` output (HamiltonianData) as a DeepH folder
(POSCAR, info.json, hamiltonian.h5, overlap.h5) and prints where it landed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from aiida import orm
from aiida.engine import run_get_node
from ase.build import graphene

from aiida_deeph.workflows.cp2k_base import Cp2kBaseWorkChain

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--supercell", type=int, default=2, help="n for an n×n graphene supercell")
parser.add_argument("--amplitude", type=float, default=0.05, help="random displacement σ in Å")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--protocol", default="fast", choices=["fast", "moderate", "precise"])
parser.add_argument("--code", default="cp2k@localhost-deeph")
parser.add_argument("--out", default="run/graphene_dft", help="folder for the exported DeepH structure")
args = parser.parse_args()

atoms = graphene(a=2.46, vacuum=6.0).repeat((args.supercell, args.supercell, 1))
atoms.rattle(args.amplitude, seed=args.seed)
atoms.pbc = (True, True, False)
structure = orm.StructureData(ase=atoms)

builder = Cp2kBaseWorkChain.get_builder_from_protocol(orm.load_code(args.code), structure, protocol=args.protocol)
start = time.perf_counter()
results, node = run_get_node(builder)
elapsed = time.perf_counter() - start
if not node.is_finished_ok:
    raise SystemExit(f"Cp2kBaseWorkChain<{node.pk}> failed with exit status {node.exit_status}: {node.exit_message}")

hamiltonian = results["hamiltonian"]
params = results["output_parameters"].get_dict()
folder = hamiltonian.export_deeph(Path(args.out) / f"{hamiltonian.pk}")
print(f"Cp2kBaseWorkChain<{node.pk}> finished in {elapsed:.1f} s (CP2K {params['wall_time_seconds']:.1f} s, "
      f"{params['scf_steps']} SCF steps, {params['number_of_images']} periodic images)")
print(f"{hamiltonian.natoms} atoms, {hamiltonian.npairs} atom pairs, E_F = {hamiltonian.fermi_energy:.4f} eV, "
      f"max |H_ij(R) - H_ji(-R)^T| = {params['hermiticity_error_eV']:.1e} eV")
print(f"DeepH-format Hamiltonian: HamiltonianData<{hamiltonian.pk}> exported to {folder.resolve()}")
