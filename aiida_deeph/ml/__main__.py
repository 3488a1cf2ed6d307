"""Command line of the ML engine: ``python -m aiida_deeph.ml <command>``.

::

    preprocess --out DIR [--split TRAIN VAL TEST] [--seed N] [--workers N] SRC...
    train CONFIG.toml [--resume]                       # under torchrun every rank runs the same command
    infer [--config CONFIG.toml] --model DIR --structure POSCAR [--overlap DIR] --out DIR
          [--max-edges-per-chunk N] [--device DEVICE]
    bands FOLDER [--out DIR] [--npoints N] [--num-bands N] [--solver auto|dense|sparse] [--sigma EV] [--plot]
          [--overlap-tolerance TOL] [--precision double|single] [--symmetry]
          [--reference DFT_FOLDER [--window EV]]         # errors against DFT in validation.json
    dos FOLDER [--out DIR] [--kmesh N N N] [--width EV] [--method auto|gaussian|kpm] [--plot]
        [--overlap-tolerance TOL] [--symmetry]
    overlap --structure POSCAR --basis NAME|ELEMENT=NAME... --out DIR [--electrons N]   # analytic S(R), no SCF

``SRC`` is a DeepH, OpenMX or ABACUS structure folder, or a folder of them. Flags of ``infer`` override the
``[process.infer]`` section of ``--config``.

Exit statuses:

==  ===============================================================================================================
0   success
1   unexpected error (traceback on stderr)
2   invalid command line, configuration or input files (the message says what is wrong; config errors list the
    valid keys)
3   training stopped on a non-finite loss or gradient; ``checkpoints/latest.pt`` is the last finite state: lower
    the learning rate and resume
4   training reached ``walltime_s``; ``latest.pt`` was saved: rerun with ``--resume`` to continue (restartable)
5   corrupted data: a dataset, checkpoint or model file is unreadable or does not match its sha256
6   out of memory: e.g. a sparse factorization that PARDISO's analysis says will not fit (checked before it runs)
==  ===============================================================================================================
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.atomic_write import write_text
from ..io.deeph_format import DeepHFormatError, DeepHStructure
from .checkpoint import CorruptedFileError
from .config import Config, ConfigError, Precision, load_config, resolve_device
from .dataset import DatasetError, preprocess
from .infer import InferenceError, infer
from .symmetry import SymmetryError
from .train import train
from .validation import BAND_WINDOW_EV

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CORRUPTED, EXIT_MEMORY = 0, 1, 2, 5, 6


def _preprocess(args: argparse.Namespace) -> int:
    out = preprocess(args.sources, args.out, fractions=args.split, seed=args.seed, workers=args.workers)
    print(f"dataset written to {out}")
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.resume:
        config.train.resume = True
    return train(config).exit_code


def _infer(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else Config()
    settings = config.infer
    for key, value in (("model_dir", args.model), ("structure", args.structure), ("overlap_dir", args.overlap),
                       ("output_dir", args.out), ("max_edges_per_chunk", args.max_edges_per_chunk)):
        if value is not None:
            setattr(settings, key, str(Path(value).resolve()) if isinstance(value, str) else value)
    missing = [flag for flag, key in (("--model", "model_dir"), ("--structure", "structure"), ("--out", "output_dir"))
               if not getattr(settings, key)]
    if missing:
        raise ConfigError(f"infer needs {', '.join(missing)} (or [process.infer] in --config)")
    device = resolve_device(args.device or config.system.device)
    dtype = Precision.resolve(config.system.precision, device).dtype
    out = infer(settings.model_dir, settings.structure, settings.output_dir, settings.overlap_dir or None,
                settings.max_edges_per_chunk, device, dtype)
    print(f"predicted Hamiltonian written to {out}")
    return EXIT_OK


def _bands(args: argparse.Namespace) -> int:
    from .bands import compute_bands, plot_bands, with_fermi_from_occupation  # matplotlib and the solvers

    out = Path(args.out or args.folder)
    out.mkdir(parents=True, exist_ok=True)
    structure = with_fermi_from_occupation(DeepHStructure.read(args.folder, overlap_tolerance=args.overlap_tolerance),
                                           symmetry=args.symmetry)
    result = compute_bands(structure, npoints=args.npoints, num_bands=args.num_bands,
                           solver=args.solver, sigma=args.sigma, output_dir=out, symmetry=args.symmetry,
                           precision=args.precision)
    reference = None
    if args.reference:
        reference = _compare_with_reference(structure, result, DeepHStructure.read(args.reference), args, out)
    if args.plot:
        plot_bands(result, out / "band.png", reference=reference)
    print(f"{out / 'band.h5'}: band gap {result.band_gap:.4f} eV{' (metal)' if result.is_metal else ''}")
    return EXIT_OK


def _compare_with_reference(structure: DeepHStructure, result, reference: DeepHStructure, args: argparse.Namespace,
                            out: Path):
    """DFT bands on the same path and the errors of ``structure`` against them, written to validation.json."""
    from .bands import compute_bands
    from .validation import band_errors, hamiltonian_errors

    reference_bands = compute_bands(reference, kpath=result.kpath, solver="dense")
    errors = {**hamiltonian_errors(structure, reference), **band_errors(result, reference_bands, args.window)}
    write_text(out / "validation.json", json.dumps(errors, indent=1))
    print(f"against the reference: H MAE {errors['hamiltonian_mae_meV']:.3f} meV, bands within ±{args.window} eV "
          f"of E_F: MAE {errors['band_mae_meV']:.3f} meV, max {errors['band_max_error_meV']:.3f} meV; rigid offset "
          f"{errors['band_offset_meV']:.3f} meV, MAE without it {errors['band_mae_without_offset_meV']:.3f} meV")
    return reference_bands


def _dos(args: argparse.Namespace) -> int:
    from .bands import compute_dos, plot_dos

    out = Path(args.out or args.folder)
    out.mkdir(parents=True, exist_ok=True)
    structure = DeepHStructure.read(args.folder, overlap_tolerance=args.overlap_tolerance)
    result = compute_dos(structure, kmesh=tuple(args.kmesh), method=args.method,
                         width=args.width, output_dir=out, symmetry=args.symmetry)
    if args.plot:
        plot_dos(result, out / "dos.png")
    print(f"{out / 'dos.h5'}: {result.method} DOS, Fermi level {result.fermi_energy_eV:.4f} eV, resolution "
          f"{result.resolution_eV:.3g} eV")
    return EXIT_OK


def add_overlap_tolerance(command: argparse.ArgumentParser) -> None:
    command.add_argument("--overlap-tolerance", type=positive_float, metavar="TOL",
                         help="drop atom pairs whose overlap block stays below TOL (and their H): the effective "
                              "parameters of large cells, e.g. 1e-6 (default: every stored pair)")


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def basis_argument(values: list[str]) -> str | dict[str, str]:
    """``--basis NAME`` (every element) or ``--basis C=NAME --basis H=NAME`` (one per element)."""
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    pairs = [value.split("=", 1) for value in values]
    if any(len(pair) != 2 or not all(pair) for pair in pairs):
        raise ConfigError(f"--basis takes NAME or ELEMENT=NAME (repeated), got {' '.join(values)}")
    return dict(pairs)


def _overlap(args: argparse.Namespace) -> int:
    from ..io.deeph_format import parse_poscar
    from ..io.overlap import analytic_overlap, basis_shells  # PySCF: only for this command

    lattice, species, positions = parse_poscar(Path(args.structure).read_text())
    basis = basis_argument(args.basis)
    try:
        orbitals = {element: basis_shells(basis, element) for element in dict.fromkeys(species)}
    except (ValueError, KeyError, RuntimeError) as exc:  # PySCF's unknown-basis errors differ by version
        raise ConfigError(f"basis {basis!r}: {exc}") from exc
    overlap = analytic_overlap(lattice, species, positions, basis)
    occupation = None if args.electrons is None else float(args.electrons)  # info.json counts electrons
    out = DeepHStructure(lattice, species, positions, orbitals, overlap=overlap, occupation=occupation).write(args.out)
    print(f"overlap of {len(species)} atoms, {len(overlap)} atom pairs written to {out}")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m aiida_deeph.ml", description=__doc__.split("\n")[0],
        epilog="exit statuses: 0 success, 1 unexpected error, 2 invalid command line, configuration or input, "
               "3 non-finite loss (lower the learning rate, resume), 4 walltime reached (rerun with --resume), "
               "5 corrupted dataset, checkpoint or model file")
    commands = main.add_subparsers(dest="command", required=True)

    command = commands.add_parser("preprocess", help="structures → one dataset folder of cached graphs")
    command.add_argument("sources", nargs="+", help="structure folders (DeepH, OpenMX, ABACUS) or folders of them")
    command.add_argument("--out", required=True, help="dataset folder to write")
    command.add_argument("--split", nargs=3, type=float, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
    command.add_argument("--seed", type=int, default=0, help="seed of the split's shuffle")
    command.add_argument("--workers", type=int, default=1, help="processes converting structures")
    command.set_defaults(run=_preprocess)

    command = commands.add_parser("train", help="train a model (torchrun for several processes)")
    command.add_argument("config", help="TOML file")
    command.add_argument("--resume", action="store_true", help="continue from checkpoints/latest.pt")
    command.set_defaults(run=_train)

    command = commands.add_parser("infer", help="predict H for a structure into a DeepH folder")
    command.add_argument("--config", help="TOML file with [process.infer] (and [system])")
    command.add_argument("--model", help="model folder (outputs/model)")
    command.add_argument("--structure", help="POSCAR file")
    command.add_argument("--overlap", help="DeepH folder with overlap.h5 whose pairs become the edges")
    command.add_argument("--out", help="output folder")
    command.add_argument("--max-edges-per-chunk", type=int, help="edges per forward pass (bounds memory)")
    command.add_argument("--device", help="cpu, cuda or cuda:N (default: [system] device, else auto)")
    command.set_defaults(run=_infer)

    command = commands.add_parser("bands", help="band structure of a DeepH folder (band.h5)")
    command.add_argument("folder")
    command.add_argument("--out", help="output folder (default: the structure folder)")
    command.add_argument("--npoints", type=int, default=100, help="k-points along the path")
    command.add_argument("--num-bands", type=int, help="bands nearest --sigma (default: all with dense)")
    command.add_argument("--solver", choices=("auto", "dense", "sparse"), default="auto")
    command.add_argument("--sigma", type=float, help="eV, centre of the band window (default: Fermi level)")
    add_overlap_tolerance(command)
    command.add_argument("--precision", choices=("double", "single"), default="double",
                         help="sparse solver: the factor's precision (single: half the memory, solves refined)")
    command.add_argument("--symmetry", action="store_true",
                         help="sparse solver: solve Γ in the irrep blocks of the cell's rotation and flip (twisted "
                              "bilayers, D3: real blocks of N/6, N/6 and N/3 rows)")
    command.add_argument("--plot", action="store_true", help="also write band.png")
    command.add_argument("--reference", help="DeepH folder of a DFT reference of the same structure: its bands "
                         "are overlaid and the errors written to validation.json")
    command.add_argument("--window", type=float, default=BAND_WINDOW_EV,
                         help="eV around the DFT Fermi level for band errors")
    command.set_defaults(run=_bands)

    command = commands.add_parser("dos", help="density of states of a DeepH folder (dos.h5)")
    command.add_argument("folder")
    command.add_argument("--out", help="output folder (default: the structure folder)")
    command.add_argument("--kmesh", nargs=3, type=int, default=(1, 1, 1))
    command.add_argument("--width", type=float, default=0.1,
                         help="eV, the broadening (std): Gaussian, or the KPM's resolution (sets its moments)")
    command.add_argument("--method", choices=("auto", "gaussian", "kpm"), default="auto")
    add_overlap_tolerance(command)
    command.add_argument("--symmetry", action="store_true",
                         help="KPM: run Γ on the irrep blocks of the cell's rotation and flip, one at a time")
    command.add_argument("--plot", action="store_true", help="also write dos.png")
    command.set_defaults(run=_dos)

    command = commands.add_parser("overlap", help="analytic S(R) of a structure in a Gaussian basis (no SCF)")
    command.add_argument("--structure", required=True, help="POSCAR file")
    command.add_argument("--basis", required=True, action="append",
                         help="basis name (CP2K or PySCF spelling) or ELEMENT=NAME, repeated per element")
    command.add_argument("--out", required=True, help="output DeepH folder (POSCAR, info.json, overlap.h5)")
    command.add_argument("--electrons", type=int, help="valence electrons: the Fermi level of a prediction on this "
                         "overlap then follows from the electron count")
    command.set_defaults(run=_overlap)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on a bad command line
    try:
        return args.run(args)
    except CorruptedFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CORRUPTED
    except (ConfigError, DatasetError, DeepHFormatError, InferenceError, SymmetryError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as exc:
        print(f"error: out of memory: {exc}", file=sys.stderr)  # the parsers' marker of exit code 420
        return EXIT_MEMORY


if __name__ == "__main__":
    sys.exit(main())
