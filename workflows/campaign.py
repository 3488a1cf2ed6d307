"""A dataset campaign: ``deeph.dataset`` for several materials, at most K at once, resumable by rerunning.

    verdi run workflows/campaign.py [--materials graphene hbn diamond silicon] [--protocol fast]
                                    [--max-concurrent 2] [--group deeph/campaign] [--interval 30] [--once]

Each material's DatasetWorkChain is submitted to the daemon (``verdi daemon start`` first) and put in the group
``--group`` with the extra ``campaign_material``; the script keeps at most ``--max-concurrent`` of them running,
submits the next as one finishes, and ends when every material has a finished WorkChain. Rerunning it (after a
crash, a reboot, or with new materials) submits only what the group does not hold yet; with ``--once`` it tops up
the running set and returns at once (for a cron job). Failed WorkChains stay in the group and are reported; remove
one from the group (``verdi group remove-nodes``) to retry it. DFT jobs are cached, so a retry reuses the samples that
had succeeded.
"""

from __future__ import annotations

import argparse
import time

from aiida import orm
from aiida.engine import submit
from aiida.engine.daemon.client import get_daemon_client
from ase import Atoms
from ase.build import bulk, graphene

from aiida_deeph.workflows.dataset import DatasetWorkChain

EXTRA = "campaign_material"


def layer(formula: str, a: float) -> Atoms:
    atoms = graphene(formula=formula, a=a, vacuum=6.0)
    atoms.pbc = (True, True, False)
    return atoms


MATERIALS = {  # name → (base cell, supercell of the training samples)
    "graphene": (lambda: layer("C2", 2.46), [2, 2, 1]),
    "hbn": (lambda: layer("BN", 2.50), [2, 2, 1]),
    "diamond": (lambda: bulk("C", "diamond", a=3.567), [1, 1, 1]),
    "silicon": (lambda: bulk("Si", "diamond", a=5.431), [1, 1, 1]),
}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--materials", nargs="+", default=list(MATERIALS), choices=list(MATERIALS))
parser.add_argument("--protocol", default="fast", choices=["test", "fast", "moderate", "precise"])
parser.add_argument("--max-concurrent", type=int, default=2, help="DatasetWorkChains running at once")
parser.add_argument("--group", default="deeph/campaign")
parser.add_argument("--interval", type=float, default=30.0, help="seconds between checks")
parser.add_argument("--once", action="store_true", help="submit what fits now and return")
parser.add_argument("--dft-code", default="cp2k@localhost-deeph")
parser.add_argument("--python-code", default="deeph-python@localhost-deeph")
args = parser.parse_args()

if not get_daemon_client().is_daemon_running:
    raise SystemExit("the campaign submits to the daemon: start it with `verdi daemon start`")
group, _ = orm.Group.collection.get_or_create(args.group)
dft_code, python_code = orm.load_code(args.dft_code), orm.load_code(args.python_code)


def members() -> dict[str, orm.WorkflowNode]:
    return {node.base.extras.get(EXTRA): node for node in group.nodes if node.base.extras.get(EXTRA) in MATERIALS}


def submit_material(name: str) -> orm.WorkflowNode:
    make_cell, supercell = MATERIALS[name]
    builder = DatasetWorkChain.get_builder_from_protocol(dft_code, python_code, orm.StructureData(ase=make_cell()),
                                                         args.protocol, {"perturbation": {"supercell": supercell}})
    node = submit(builder)
    node.base.extras.set(EXTRA, name)
    group.add_nodes(node)
    print(f"submitted {name}: DatasetWorkChain<{node.pk}>")
    return node


while True:
    nodes = members()
    running = [name for name, node in nodes.items() if not node.is_terminated]
    for name in [m for m in args.materials if m not in nodes][:max(0, args.max_concurrent - len(running))]:
        nodes[name] = submit_material(name)
    done = {name: node for name, node in nodes.items() if name in args.materials and node.is_terminated}
    print(f"{time.strftime('%H:%M:%S')} {len(done)}/{len(args.materials)} finished, "
          f"{sum(not n.is_terminated for n in nodes.values())} running")
    if args.once or len(done) == len(args.materials):
        break
    time.sleep(args.interval)

for name, node in sorted(members().items()):
    if name not in args.materials or not node.is_terminated:
        continue
    if node.is_finished_ok:
        dataset = node.outputs.dataset
        print(f"{name:10s} dataset<{dataset.pk}> {dataset.num_structures} structures, elements {dataset.elements}")
    else:
        print(f"{name:10s} DatasetWorkChain<{node.pk}> failed: {node.exit_status} {node.exit_message}")
