"""The provenance questions, answered from the database: what a model was trained on, what it predicted, which DFT.

    verdi run workflows/query.py [--element C] [--material C] [--engine cp2k]

Prints (1) the models trained on datasets containing ``--element``, each with its held-out MAE; (2) every prediction
each of them made; (3) the DFT code, version, basis and cutoff behind each model; (4) the datasets of ``--material``
(a formula or element set, e.g. ``C``, ``BN``) made with ``--engine``. All answers come from
``aiida_deeph.tools.queries``, which follows CalcJob links, so WorkChain-run and hand-run chains are found alike.
"""

from __future__ import annotations

import argparse

from aiida_deeph.tools import queries

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--element", default="C")
parser.add_argument("--material", default=None, help="formula or element set, e.g. C or BN (default: any)")
parser.add_argument("--engine", default=None, choices=queries.DFT_ENGINES, help="(default: any)")
args = parser.parse_args()

models = queries.models_trained_on_element(args.element)
print(f"models trained on data containing {args.element}: {len(models)}")
for model in models:
    metrics = model.base.attributes.get("metrics", {}) or {}
    print(f"  model<{model.pk}> {model.architecture}, elements {sorted(model.elements_orbital_map)}, "
          f"test MAE {metrics.get('test', {}).get('mae_meV', float('nan')):.2f} meV")
    for prediction in queries.predictions_of_model(model):
        print(f"    prediction<{prediction.pk}>: {prediction.natoms} atoms, {prediction.npairs} atom pairs")
    runs = queries.dft_behind_model(model)
    versions = sorted({f"{run['engine']} {run['version']}" for run in runs})
    settings = sorted({f"basis {run['basis']}, cutoff {run['cutoff_Ry']} Ry" for run in runs}, key=str)
    print(f"    trained on {len(runs)} DFT runs: {', '.join(versions)}; {'; '.join(settings)}")

datasets = queries.datasets_by(args.material, args.engine)
print(f"datasets (material {args.material or 'any'}, engine {args.engine or 'any'}): {len(datasets)}")
for dataset in datasets:
    print(f"  dataset<{dataset.pk}> {dataset.num_structures} structures, elements {dataset.elements}, "
          f"split {dataset.base.attributes.get('split')}")
