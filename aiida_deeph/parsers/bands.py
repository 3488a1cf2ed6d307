"""Parser of ``deeph.bands``: band.h5 → BandsData, dos.h5 → XyData, the PNG plots → SinglefileData."""

from __future__ import annotations

import json

import h5py
import numpy as np
from aiida import orm

from aiida_deeph.calculations.bands import BANDS
from aiida_deeph.io.deeph_format import H5_ERRORS

from .ml_base import MLParser


class BandsParser(MLParser):
    command = "bands"

    def parse(self, **kwargs):
        failure = self.engine_failure()
        if failure:
            return failure
        names = set(self.retrieved.base.repository.list_object_names(BANDS)) if BANDS in \
            self.retrieved.base.repository.list_object_names() else set()
        if "band.h5" not in names:
            return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(message=f"{BANDS}/band.h5")
        try:
            parameters = self._read_outputs(names)
        except H5_ERRORS as exc:
            return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(
                message=f"the files in {BANDS}/ are unreadable ({type(exc).__name__}: {exc})")
        self.out("output_parameters", orm.Dict(parameters))
        return None

    def _read_outputs(self, names: set[str]) -> dict:
        """Attach bands, DOS and plots from band.h5 (and dos.h5); returns the output parameters."""
        with self.retrieved.base.repository.open(f"{BANDS}/band.h5", "rb") as handle, h5py.File(handle, "r") as h5:
            fermi = float(h5["fermi_energy_before_shift_eV"][()])
            energies = np.asarray(h5["band_data"][()]).T + fermi  # absolute eV, (nk, nbands)
            kpoints = np.asarray(h5["kpoints_frac_list"][()])
            distances = np.asarray(h5["kpoints_distance_list"][()])
            label_positions = np.asarray(h5["hsk_distance_list"][()])
            symbols = np.asarray(h5["hsk_symbol_list"][()])
            gap, metal = float(h5["band_gap"][()]), bool(h5["is_metal"][()])
        bands = orm.BandsData()
        bands.set_cell_from_structure(self.node.inputs.hamiltonian.get_structure())
        bands.set_kpoints(kpoints)
        bands.set_bands(energies, units="eV")
        labels = [symbols[0, 0]] + [pair[1] for pair in symbols]
        bands.labels = [(int(np.argmin(np.abs(distances - position))), label.decode() if isinstance(label, bytes)
                         else str(label)) for position, label in zip(label_positions, labels)]
        self.out("bands", bands)
        self.out("band_plot", self._file("band.png"))
        parameters = {"fermi_energy": fermi, "fermi_energy_units": "eV", "band_gap": gap, "band_gap_units": "eV",
                      "is_metal": metal, "number_of_bands": energies.shape[1], "number_of_kpoints": len(kpoints)}
        if "dos.h5" in names:
            with self.retrieved.base.repository.open(f"{BANDS}/dos.h5", "rb") as handle, h5py.File(handle, "r") as h5:
                dos = orm.XyData()
                dos.set_x(np.asarray(h5["energies_eV"][()]), "energy", "eV")
                dos.set_y([np.asarray(h5["dos"][()]), np.asarray(h5["integrated_dos"][()])],
                          ["dos", "integrated_dos"], ["states/eV", "states"])
                parameters["dos_method"] = h5["method"][()].decode() if isinstance(h5["method"][()], bytes) \
                    else str(h5["method"][()])
                parameters.update(dos_resolution=float(h5["resolution_eV"][()]), dos_resolution_units="eV")
            self.out("dos", dos)
            self.out("dos_plot", self._file("dos.png"))
        if "validation.json" in names:
            parameters.update(json.loads(self.retrieved.base.repository.get_object_content(f"{BANDS}/validation.json")))
        return parameters

    def _file(self, name: str) -> orm.SinglefileData:
        with self.retrieved.base.repository.open(f"{BANDS}/{name}", "rb") as handle:
            return orm.SinglefileData(handle, filename=name)
