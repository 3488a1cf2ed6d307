"""Bilayer graphene, end to end: CP2K on shifted, perturbed bilayers → DeepH-2 → bands of a twisted bilayer.

    verdi run workflows/bilayer_to_twisted.py [--protocol fast] [--supercell 2] [--shifts 3] [--angle 9.43]
                                              [--validation-angle 21.79] [--out run/bilayer_to_twisted] [--foreground]

One ``deeph.deeph`` WorkChain on the embedded engine:

1. ``deeph.dataset``: an N×N AA bilayer (``--supercell``) with its top layer shifted on an S×S grid of the unit cell
   (``--shifts``; every stacking, AB and SP included), each shifted cell randomly perturbed, each a real CP2K run;
2. ``deeph.training``: DeepH-2 on those cells (``--protocol`` sets model size and time);
3. ``deeph.inference``: the model predicts the commensurate twisted bilayer nearest ``--angle`` (9.43° → 148 atoms;
   1.05° → 11,908 atoms is for a cluster) and its bands; a direct CP2K run of the twisted bilayer nearest
   ``--validation-angle`` (21.79° → 28 atoms), which no training cell resembles, validates the model: band error
   within ±2 eV of the Fermi level.

Daemon running: submitted and followed; otherwise (or ``--foreground``) run here. Prints the held-out MAE, the band
error against DFT, the band plots and the pk for ``verdi process show``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiida import orm

from aiida_deeph.structures import default_distance, primitive_layer, twisted_bilayer
from aiida_deeph.tools.launch import check_finished, deeph_summary, run_or_submit
from aiida_deeph.workflows.deeph import DeepHWorkChain

VACUUM = 15.0  # Å in total along z, as twisted_bilayer's default: train and target see the same slab

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--protocol", default="fast", choices=["test", "fast", "moderate", "precise"])
parser.add_argument("--supercell", type=int, default=2, help="N: training cells are N×N AA bilayers")
parser.add_argument("--shifts", type=int, default=3, help="S: an S×S grid of interlayer shifts")
parser.add_argument("--samples", type=int, default=1, help="perturbed copies of every shifted cell")
parser.add_argument("--displacement", type=float, default=0.05, help="Å, uniform random displacement bound")
parser.add_argument("--angle", type=float, default=9.43, help="twist angle of the predicted bilayer (degrees)")
parser.add_argument("--validation-angle", type=float, default=21.79, help="twist angle of the DFT validation cell")
parser.add_argument("--dft-code", default="cp2k@localhost-deeph")
parser.add_argument("--python-code", default="deeph-python@localhost-deeph")
parser.add_argument("--out", type=Path, default=Path("run/bilayer_to_twisted"), help="where the band plots are copied")
parser.add_argument("--foreground", action="store_true", help="run in this process even if the daemon runs")
args = parser.parse_args()

bottom = primitive_layer("graphene")
top = bottom.copy()
top.positions[:, 2] += default_distance("graphene")
bilayer = bottom + top
bilayer.center(vacuum=VACUUM / 2, axis=2)
bilayer.pbc = (True, True, False)
target = twisted_bilayer("graphene", angle=args.angle, vacuum=VACUUM)
validation = twisted_bilayer("graphene", angle=args.validation_angle, vacuum=VACUUM)
for atoms in (target, validation):
    atoms.pbc = (True, True, False)
    atoms.set_tags(0)  # layer tags would become separate kinds (C, C1) in StructureData

perturbation = {"supercell": [args.supercell, args.supercell, 1], "shifts": [args.shifts, args.shifts],
                "samples": args.samples, "displacement": args.displacement}
builder = DeepHWorkChain.get_builder_from_protocol(
    orm.load_code(args.dft_code), orm.load_code(args.python_code), orm.StructureData(ase=bilayer),
    orm.StructureData(ase=target), args.protocol, validation_structure=orm.StructureData(ase=validation),
    overrides={"dataset": {"perturbation": perturbation}})
print(f"deeph.deeph ({args.protocol}): {args.samples * args.shifts ** 2} CP2K runs of "
      f"{4 * args.supercell ** 2}-atom shifted bilayers → DeepH-2 → {target.info['twist_angle']:.2f}° twisted bilayer "
      f"({len(target)} atoms), validated on the {validation.info['twist_angle']:.2f}° one ({len(validation)} atoms)")

node = run_or_submit(builder, args.foreground)
check_finished(node)
print("\n" + "\n".join(deeph_summary(node, args.out)))
