"""``deeph.preprocess``: DFT structures (HamiltonianData nodes and/or remote DFT folders) → one ``deeph.dataset``."""

from __future__ import annotations

from aiida import orm

from aiida_deeph.data.dataset import DatasetData
from aiida_deeph.data.hamiltonian import HamiltonianData

from .ml_base import MLCalculation, copy_folder_node
from .validation import LINK_LABEL_PUNCTUATION, names_error

SOURCES, DATASET = "sources", "dataset"


def validate_sources(inputs, ctx) -> str | None:
    if "structures" not in ctx and "dft_folders" not in ctx:
        return None  # excluded where a WorkChain supplies them (deeph.dataset)
    if not inputs.get("structures") and not inputs.get("dft_folders"):
        return "give at least one structure (HamiltonianData) or DFT folder (RemoteData)"
    # each name becomes the folder sources/<name> of the job
    message = names_error([*inputs.get("structures", {}), *inputs.get("dft_folders", {})], "structure name",
                          LINK_LABEL_PUNCTUATION)
    if message:
        return message
    fractions = (inputs.get("parameters") or orm.Dict({})).get_dict().get("split", [0.8, 0.1, 0.1])
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        return f"split must be three non-negative fractions adding up to 1, got {fractions}"
    return None


class PreprocessCalculation(MLCalculation):
    """Convert and graph a set of structures into a training dataset with a seeded train/val/test split.

    ``parameters``: ``split`` ([train, val, test] fractions, default [0.8, 0.1, 0.1]), ``seed`` (0), ``workers`` (1).
    ``dft_folders`` are OpenMX or ABACUS calculation folders left on the remote (``keep_matrices_remote``): they are
    linked in and converted there, so the large matrix files never travel.
    """

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace("structures", valid_type=HamiltonianData, dynamic=True, required=False,
                             help="DeepH-format structures, keyed by name.")
        spec.input_namespace("dft_folders", valid_type=orm.RemoteData, dynamic=True, required=False,
                             help="Remote OpenMX/ABACUS calculation folders, keyed by name.")
        spec.input("parameters", valid_type=orm.Dict, required=False)
        spec.inputs.validator = validate_sources
        spec.input("metadata.options.parser_name", valid_type=str, default="deeph.preprocess")
        spec.output("dataset", valid_type=DatasetData)

    def prepare_for_submission(self, folder):
        params = self.inputs.parameters.get_dict() if "parameters" in self.inputs else {}
        copies = []
        for name, node in self.inputs.get("structures", {}).items():
            copies += copy_folder_node(node, f"{SOURCES}/{name}")
        folder.get_subfolder(SOURCES, create=True)
        arguments = ["preprocess", "--out", DATASET, "--split", *(str(x) for x in params.get("split", (0.8, 0.1, 0.1))),
                     "--seed", str(params.get("seed", 0)), "--workers", str(params.get("workers", 1)), SOURCES]
        calcinfo = self.calcinfo([self.codeinfo(arguments)], copies, retrieve_temporary=[DATASET])
        calcinfo.remote_symlink_list = [
            (remote.computer.uuid, remote.get_remote_path(), f"{SOURCES}/{name}")
            for name, remote in self.inputs.get("dft_folders", {}).items()
        ]
        return calcinfo
