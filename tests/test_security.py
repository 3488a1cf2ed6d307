"""Security: no unsafe deserialisation or shell, tampered models refused, hostile names refused before submission,
no secrets in node attributes.

The source checks walk the syntax trees of every module of the package (comments and docstrings cannot fool them);
each also counts what it found, so that a check that matches nothing fails instead of passing vacuously.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from aiida import orm
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida_pseudo.data.pseudo import UpfData

from aiida_deeph.calculations.abacus import DeepHAbacusCalculation
from aiida_deeph.calculations.cp2k import DeepHCp2kCalculation
from aiida_deeph.calculations.openmx import DeepHOpenmxCalculation
from aiida_deeph.calculations.preprocess import PreprocessCalculation
from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.data.model import ModelData
from aiida_deeph.ml.checkpoint import CorruptedFileError, load_checkpoint, load_model

from .calculations.test_abacus import mos2_inputs
from .calculations.test_openmx import fe_inputs
from .replay import SERIAL, assert_refused
from .test_bad_input import cp2k_inputs
from .test_fuzz_readers import MOS2, train_tiny_model

PACKAGE = Path(__file__).resolve().parent.parent / "aiida_deeph"
HOSTILE_NAMES = ["../../etc/x", "a\nCOORD", "a b", "a'b", 'a"b', "/etc/passwd", "..", "x\r&GLOBAL"]


# --- the source -------------------------------------------------------------------------------------------------------
def calls() -> Iterator[tuple[Path, ast.Call, str]]:
    """Every call in the package with its dotted name (``torch.load``, ``subprocess.run``, ``open``)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                yield path, node, ast.unparse(node.func)


def keyword(call: ast.Call, name: str) -> object:
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else value


def imported_modules() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    return names


def test_every_torch_load_is_weights_only():
    loads = [(path, call) for path, call, name in calls() if name == "torch.load"]
    unsafe = [f"{path.relative_to(PACKAGE)}:{call.lineno}" for path, call in loads
              if keyword(call, "weights_only") is not True]
    assert len(loads) >= 2 and not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_yaml_only_safe_load_and_toml_only_tomllib():
    names = [name for _, _, name in calls()]
    assert "yaml.safe_load" in names and "tomllib.loads" in names
    assert not [name for name in names if re.fullmatch(r"yaml\.(load|load_all|full_load|unsafe_load\w*)", name)]
    modules = imported_modules()
    assert "toml" not in modules and "pickle" not in modules and "dill" not in modules and "marshal" not in modules


def test_no_shell():
    found = list(calls())
    shell = [f"{path.relative_to(PACKAGE)}:{call.lineno}" for path, call, name in found
             if keyword(call, "shell") not in (None, False)]
    system = [f"{path.relative_to(PACKAGE)}:{call.lineno} {name}" for path, call, name in found
              if name in ("os.system", "os.popen", "eval", "exec") or name.startswith("os.exec")]
    assert len(found) > 1000 and not shell and not system, (shell, system)


# --- tampered model and checkpoint files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_training(dft_fixtures, tmp_path_factory) -> Path:
    return train_tiny_model(dft_fixtures / MOS2 / "deeph_ref", tmp_path_factory.mktemp("tiny"))


class Trap:
    """Unpickling this runs ``Path.touch`` on the marker: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_checkpoint_with_pickled_code_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "executed"
    torch.save({"model": {}, "digest": "x", "payload": Trap(marker)}, tmp_path / "latest.pt")
    with pytest.raises(CorruptedFileError, match="latest.pt: unreadable, truncated or corrupted"):
        load_checkpoint(tmp_path / "latest.pt")
    assert not marker.exists()


def test_model_weights_with_pickled_code_are_refused_unexecuted(tiny_training, tmp_path):
    model = tiny_training / "outputs" / "model"
    for name in ("config.json", "basis.json", "metrics.json"):
        (tmp_path / name).write_bytes((model / name).read_bytes())
    marker = tmp_path / "executed"
    torch.save({"weight": Trap(marker)}, tmp_path / "weights.pt")
    with pytest.raises(CorruptedFileError, match="weights.pt: unreadable"):
        load_model(tmp_path)
    assert not marker.exists()


def tampered_weights(model: Path) -> bytes:
    """The weights file with one weight changed and re-saved: a valid file whose content is not the trained one."""
    weights = torch.load(model / "weights.pt", weights_only=True)
    name = next(iter(weights))
    weights[name] = weights[name] + 1.0
    path = model.parent / "tampered.pt"
    torch.save(weights, path)
    return path.read_bytes()


def test_tampered_model_node_refuses_to_load(aiida_profile, tiny_training):
    """The repository's weights.pt replaced after the node recorded its sha256: load() refuses, naming the file."""
    model = ModelData(tiny_training / "outputs" / "model")
    assert sum(p.numel() for p in model.load().parameters()) > 0  # the control: intact, it loads
    model.base.repository.put_object_from_bytes(tampered_weights(tiny_training / "outputs" / "model"), "weights.pt")
    with pytest.raises(ValueError, match=r"weights.pt of ModelData<None> fails its sha256 check"):
        model.load()


def test_model_folder_with_edited_weights_refused(tiny_training, tmp_path):
    """Outside AiiDA the weights carry their sha256 in config.json: a re-saved, edited weights.pt is refused."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "basis.json", "metrics.json"):
        (folder / name).write_bytes((tiny_training / "outputs" / "model" / name).read_bytes())
    (folder / "weights.pt").write_bytes(tampered_weights(tiny_training / "outputs" / "model"))
    with pytest.raises(CorruptedFileError, match="weights.pt: content does not match its sha256 in config.json"):
        load_model(folder)


# --- hostile names ----------------------------------------------------------------------------------------------------
def with_kind_name(structure: orm.StructureData, name: str) -> orm.StructureData:
    """The structure with its first kind renamed to ``name``."""
    copy = orm.StructureData(cell=structure.cell, pbc=structure.pbc)
    first = structure.sites[0].kind_name
    for site in structure.sites:
        kind = structure.get_kind(site.kind_name)
        copy.append_atom(position=site.position, symbols=kind.symbol,
                         name=name if site.kind_name == first else site.kind_name)
    return copy


PLAIN = r"is not a plain name: use letters, digits and _ \. \+ - only"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_kind_names_refused(aiida_profile, aiida_code_installed, dft_fixtures, tmp_path, name):
    code = aiida_code_installed()
    for process, inputs in (
        (DeepHCp2kCalculation, cp2k_inputs(code)),
        (DeepHOpenmxCalculation, fe_inputs(dft_fixtures / "openmx/fe_bcc_spin_sli43", tmp_path, code)),
        (DeepHAbacusCalculation, mos2_inputs(dft_fixtures / MOS2, code)),
    ):
        assert_refused(process, {**inputs, "structure": with_kind_name(inputs["structure"], name)},
                       rf"kind name .* {PLAIN}")


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "a.b"])
def test_hostile_structure_keys_refused(aiida_profile, python_code, dft_fixtures, name):
    """The keys of ``structures`` become folders sources/<key> of the job (and AiiDA link labels)."""
    structure = HamiltonianData(folder=dft_fixtures / MOS2 / "deeph_ref")
    assert_refused(PreprocessCalculation, {"code": python_code, "structures": {name: structure},
                                           "metadata": {"options": SERIAL}},
                   r"structure name .* is not a plain name: use letters, digits and _ only")


def test_line_breaks_in_keywords_refused(aiida_profile, aiida_code_installed, dft_fixtures, tmp_path):
    """A value with a newline would write a second keyword line, e.g. one the plugin controls."""
    code = aiida_code_installed()
    fe = fe_inputs(dft_fixtures / "openmx/fe_bcc_spin_sli43", tmp_path, code,
                   parameters={"scf_XcType": "GGA-PBE\nHS.fileout off"})
    assert_refused(DeepHOpenmxCalculation, fe, r"parameters: 'GGA-PBE\\nHS.fileout off' holds a line break")
    mos2 = mos2_inputs(dft_fixtures / MOS2, code, parameters={"ecutwfc": "60\nout_mat_hs2 0"})
    assert_refused(DeepHAbacusCalculation, mos2, r"holds a line break")
    cp2k = cp2k_inputs(code, parameters=orm.Dict({"FORCE_EVAL": {"DFT": {"CHARGE": "0\n&END DFT"}}}))
    assert_refused(DeepHCp2kCalculation, cp2k, r"holds a line break")
    for key in ("basis_set", "pseudopotential"):
        assert_refused(DeepHCp2kCalculation, cp2k_inputs(code, **{key: orm.Str("GTH-PBE\n&GLOBAL")}), PLAIN)


@pytest.mark.parametrize("filename", ["../../Mo_ONCV_PBE-1.0.upf", "Mo ONCV.upf", "Mo\nONCV.upf"])
def test_hostile_file_names_refused(aiida_profile, aiida_code_installed, dft_fixtures, filename):
    """Pseudopotential and orbital files are staged under their file names: those must stay in the folder."""
    inputs = mos2_inputs(dft_fixtures / MOS2, aiida_code_installed())
    pseudo = UpfData(dft_fixtures / MOS2 / "pseudo" / "Mo_ONCV_PBE-1.0.upf", filename=filename)
    assert_refused(DeepHAbacusCalculation, {**inputs, "pseudos": {**inputs["pseudos"], "Mo": pseudo}},
                   rf"file name .* {PLAIN}")


# --- secrets ----------------------------------------------------------------------------------------------------------
SECRET = re.compile(r"pass(word|wd)?|secret|token|credential|private|auth", re.IGNORECASE)


def attribute_keys(value: object, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{prefix}{key}"
            yield from attribute_keys(item, f"{prefix}{key}.")


def test_no_secret_in_calcjob_attributes(aiida_profile, aiida_code_installed, dft_fixtures, tmp_path):
    """The computer's transport and authentication settings never become attributes of our CalcJob nodes."""
    code = aiida_code_installed()
    jobs = ((DeepHCp2kCalculation, cp2k_inputs(code)),
            (DeepHOpenmxCalculation, fe_inputs(dft_fixtures / "openmx/fe_bcc_spin_sli43", tmp_path, code)),
            (DeepHAbacusCalculation, mos2_inputs(dft_fixtures / MOS2, code)))
    keys = []
    for process, inputs in jobs:
        node = instantiate_process(get_manager().get_runner(), process, **inputs).node
        keys += list(attribute_keys(node.base.attributes.all))
    assert len(keys) > 10 and not [key for key in keys if SECRET.search(key)]
