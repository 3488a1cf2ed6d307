"""Launching from scripts and the CLI: submit to the daemon and follow, or run here; the end-to-end summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiida import orm
from aiida.engine import ProcessBuilder, run_get_node, submit
from aiida.engine.daemon.client import get_daemon_client

from .watch import follow


def run_or_submit(builder: ProcessBuilder, foreground: bool = False,
                  echo: Callable[[str], None] = print) -> orm.ProcessNode:
    """With the daemon running, submit and follow (Ctrl-C stops following, not the work); else run in this process."""
    if get_daemon_client().is_daemon_running and not foreground:
        node = submit(builder)
        echo(f"submitted {node.process_label}<{node.pk}>; following it (Ctrl-C stops following, not the work)")
        return follow(node, echo=echo)
    return run_get_node(builder)[1]


def check_finished(node: orm.ProcessNode) -> None:
    if not node.is_finished_ok:
        raise SystemExit(f"{node.process_label}<{node.pk}> failed: exit status {node.exit_status} "
                         f"({node.exit_message}); see `verdi process report {node.pk}`")


def deeph_summary(node: orm.WorkflowNode, out: Path) -> list[str]:
    """The figures of a finished ``deeph.deeph``, with its band plots copied into ``out``."""
    summary = node.outputs.output_parameters.get_dict()
    inference = node.outputs.inference
    out.mkdir(parents=True, exist_ok=True)
    test = summary.get("test_mae_meV")
    held_out = f"{test:.2f} meV" if test is not None else "none (the dataset has no test split)"
    lines = [f"held-out MAE of H (test split): {held_out} "
             f"(validation split {summary['val_mae_meV']:.2f} meV, {summary['epochs']} epochs)"]
    if "bands" in inference:
        (out / "target_bands.png").write_bytes(inference.bands.band_plot.get_content(mode="rb"))
        lines.append(f"bands of the {summary['natoms']}-atom target: {out / 'target_bands.png'}")
    if "validation" in summary:
        errors = summary["validation"]
        (out / "validation_bands.png").write_bytes(inference.validation.band_plot.get_content(mode="rb"))
        lines.append(f"band error against direct DFT of the validation cell (±{errors['band_window_eV']:g} eV of "
                     f"E_F): {errors['band_mae_meV']:.1f} meV mean, {errors['band_max_error_meV']:.1f} meV max "
                     f"({errors['band_mae_without_offset_meV']:.1f} meV mean without the rigid offset of "
                     f"{errors['band_offset_meV']:+.1f} meV); "
                     f"H MAE there {errors['hamiltonian_mae_meV']:.2f} meV; plot {out / 'validation_bands.png'}")
    lines.append(f"inspect the whole chain: verdi process show {node.pk}   (from the prediction back to the DFT: "
                 f"aiida-deeph provenance {inference.hamiltonian.pk})")
    return lines


def cluster_overrides(engine: str, *, machines: int, mpiprocs: int, walltime: int, queue: str | None = None,
                      account: str | None = None, gpus: int = 0) -> dict:
    """Protocol overrides of ``deeph.deeph`` for a SLURM cluster: DFT on ``machines`` × ``mpiprocs`` ranks, training
    on one node with ``gpus`` GPUs (torchrun data parallel when more than one), each job ``walltime`` seconds."""
    from aiida_deeph.workflows.engines import ENGINES

    def options(resources: dict, extra: str = "") -> dict:
        values = {"resources": resources, "max_wallclock_seconds": walltime}
        values.update({key: value for key, value in (("queue_name", queue), ("account", account)) if value})
        if extra:
            values["custom_scheduler_commands"] = extra
        return {"metadata": {"options": values}}

    dft = options({"num_machines": machines, "num_mpiprocs_per_machine": mpiprocs})
    training = options({"num_machines": 1, "num_mpiprocs_per_machine": 1}, f"#SBATCH --gres=gpu:{gpus}" if gpus else "")
    training["parameters"] = {"system": {"device": "cuda" if gpus else "cpu"}}
    if gpus > 1:
        training["settings"] = {"torchrun": {"nproc_per_node": gpus, "nnodes": 1}}
    single = options({"num_machines": 1, "num_mpiprocs_per_machine": 1})
    return {"dataset": {engine: {ENGINES[engine]._namespace: dft}},
            "training": {"train": training},
            "inference": {engine: {ENGINES[engine]._namespace: dft}, "infer": single, "bands": single}}


def cluster_main(engine: str, description: str) -> None:
    """The command line of the ``workflows/<engine>_cluster.py`` scripts: ``deeph.deeph`` with ``engine`` on SLURM."""
    import argparse

    from ase.io import read

    from aiida_deeph.workflows.deeph import DeepHWorkChain

    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("structure", help="base cell of the training samples (any ase format)")
    parser.add_argument("target", help="the structure to predict (any ase format)")
    parser.add_argument("--validation", help="a small cell for a direct DFT comparison (optional)")
    parser.add_argument("--dft-code", required=True, help=f"{engine} code label, e.g. {engine}@cluster")
    parser.add_argument("--python-code", required=True, help="python with aiida-deeph on the cluster, e.g. deeph@cluster")
    parser.add_argument("--overlap-code", help=f"the overlap-only build of {engine} (default: --dft-code)")
    parser.add_argument("--pseudo-family", help="aiida-pseudo family (default: the protocol's)")
    parser.add_argument("--orbital-family", help="deeph.orbital.family (default: the protocol's)")
    parser.add_argument("--protocol", default="moderate", choices=["test", "fast", "moderate", "precise"])
    parser.add_argument("--machines", type=int, default=1, help="nodes per DFT job")
    parser.add_argument("--mpiprocs", type=int, default=32, help="MPI ranks per node for DFT")
    parser.add_argument("--walltime", type=int, default=24 * 3600, help="seconds per job")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of the training node (0: CPU)")
    parser.add_argument("--queue")
    parser.add_argument("--account")
    args = parser.parse_args()

    families = {key: value for key, value in (("pseudo_family", args.pseudo_family),
                                              ("orbital_family", args.orbital_family)) if value}
    overrides = cluster_overrides(engine, machines=args.machines, mpiprocs=args.mpiprocs, walltime=args.walltime,
                                  queue=args.queue, account=args.account, gpus=args.gpus)
    builder = DeepHWorkChain.get_builder_from_protocol(
        orm.load_code(args.dft_code), orm.load_code(args.python_code), orm.StructureData(ase=read(args.structure)),
        orm.StructureData(ase=read(args.target)), args.protocol, overrides,
        validation_structure=orm.StructureData(ase=read(args.validation)) if args.validation else None,
        engine=engine, overlap_code=orm.load_code(args.overlap_code) if args.overlap_code else None, **families)
    node = run_or_submit(builder)
    check_finished(node)
    print("\n".join(deeph_summary(node, Path(f"deeph-{node.pk}"))))
