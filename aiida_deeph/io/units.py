"""Unit conversions, applied once at each reader: everything inside aiida-deeph is eV and Å."""

HARTREE_TO_EV = 27.211386245988  # CODATA 2018 (CP2K, PySCF)
RYDBERG_TO_EV = HARTREE_TO_EV / 2
BOHR_TO_ANGSTROM = 0.529177210903

# OpenMX and DeepH-pack use these older constants; readers of OpenMX output use them so that our numbers equal
# DeepH-pack's conversion of the same file bit for bit.
OPENMX_HARTREE_TO_EV = 27.2113845
OPENMX_BOHR_TO_ANGSTROM = 0.529177249
# ABACUS (source/module_base/constants.h: Hartree_to_eV = 27.211396, BOHR_TO_A = 0.529177) and deepx-dock, which
# converts H with Hartree_to_eV / 2. The log's "E_Fermi <Ry> <eV>" pairs follow this ratio exactly.
ABACUS_RYDBERG_TO_EV = 27.211396 / 2
ABACUS_BOHR_TO_ANGSTROM = 0.529177
