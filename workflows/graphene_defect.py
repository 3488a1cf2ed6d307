"""Graphene with vacancies, end to end: CP2K on perturbed defect cells → DeepH-2 → bands of a large defect supercell.

    verdi run workflows/graphene_defect.py [--protocol fast] [--supercell 3] [--target 8] [--vacancies 4]
                                           [--out run/graphene_defect] [--foreground]

One ``deeph.deeph`` WorkChain on the embedded engine (codes ``cp2k@localhost-deeph`` and
``deeph-python@localhost-deeph`` from ``aiida-deeph setup``):

1. ``deeph.dataset``: an N×N graphene cell with one vacancy (``--supercell``), randomly perturbed (samples,
   amplitude and DFT settings from ``--protocol``: test | fast | moderate | precise), each sample a real CP2K run;
2. ``deeph.training``: DeepH-2 on those cells, on the CPU (the ``fast`` protocol trains for at most 9 minutes);
3. ``deeph.inference``: the model predicts an M×M supercell (``--target``) with ``--vacancies`` vacancies far apart,
   no DFT; its band structure follows, and a direct CP2K run of a fresh perturbed N×N defect cell validates the model
   (band error within ±2 eV of the Fermi level).

With the daemon running (``verdi daemon start``) the WorkChain is submitted and followed here (Ctrl-C stops
following, not the work); otherwise, or with ``--foreground``, it runs in this process. The README's first command
runs this script with the ``fast`` protocol: about 15–25 minutes on 2 cores. Ends by printing the held-out MAE, the
band error against DFT, where the band plots were written, and the pk to give ``verdi process show``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from aiida import orm
from ase import Atoms
from ase.build import graphene

from aiida_deeph.structures import vacancy
from aiida_deeph.tools.launch import check_finished, deeph_summary, run_or_submit
from aiida_deeph.workflows.deeph import DeepHWorkChain

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--protocol", default="fast", choices=["test", "fast", "moderate", "precise"])
parser.add_argument("--supercell", type=int, default=3, help="N: training cells are N×N graphene with one vacancy")
parser.add_argument("--target", type=int, default=8, help="M: the predicted structure is M×M graphene")
parser.add_argument("--vacancies", type=int, default=4, help="vacancies in the target")
parser.add_argument("--dft-code", default="cp2k@localhost-deeph")
parser.add_argument("--python-code", default="deeph-python@localhost-deeph")
parser.add_argument("--out", type=Path, default=Path("run/graphene_defect"), help="where the band plots are copied")
parser.add_argument("--foreground", action="store_true", help="run in this process even if the daemon runs")
args = parser.parse_args()


def layer(n: int) -> Atoms:
    atoms = graphene(a=2.46, vacuum=6.0).repeat((n, n, 1))
    atoms.pbc = (True, True, False)
    return atoms


def spread_sites(atoms: Atoms, count: int) -> list[int]:
    """``count`` sites far from each other: greedy farthest-point choice under the minimum-image convention."""
    chosen = [0]
    while len(chosen) < count:
        distances = np.min([atoms.get_distances(site, range(len(atoms)), mic=True) for site in chosen], axis=0)
        chosen.append(int(np.argmax(distances)))
    return chosen


base = vacancy(layer(args.supercell), 0)
validation = base.copy()
validation.rattle(0.05, seed=1234)  # a perturbation no training sample has
target_layer = layer(args.target)
target = vacancy(target_layer, spread_sites(target_layer, args.vacancies))

builder = DeepHWorkChain.get_builder_from_protocol(
    orm.load_code(args.dft_code), orm.load_code(args.python_code), orm.StructureData(ase=base),
    orm.StructureData(ase=target), args.protocol, validation_structure=orm.StructureData(ase=validation),
    overrides={"dataset": {"perturbation": {"supercell": [1, 1, 1]}}})  # the defect cell is the training cell
samples = builder.dataset.perturbation["samples"]
print(f"deeph.deeph ({args.protocol}): {samples} CP2K runs of {len(base)}-atom defect cells → DeepH-2 → "
      f"{len(target)}-atom target with {args.vacancies} vacancies, validated on a {len(validation)}-atom cell")

node = run_or_submit(builder, args.foreground)
check_finished(node)
print("\n" + "\n".join(deeph_summary(node, args.out)))
