"""Structure generation for DeepH training sets: twisted bilayers, point defects and perturbed supercells.

Pure ase/pymatgen code on ``ase.Atoms``; atoms are always grouped by element, as the DeepH format requires.
"""

from .defects import group_by_element, interstitial, largest_empty_site, random_alloy, substitution, vacancy
from .perturb import find_top_layer, interlayer_shift_grid, minimum_distance, perturbed_supercells
from .twisted import (
    MATERIALS,
    commensurate_indices,
    default_distance,
    primitive_layer,
    standard_layer,
    twist_angle,
    twisted_bilayer,
)

__all__ = [
    "MATERIALS",
    "commensurate_indices",
    "default_distance",
    "find_top_layer",
    "group_by_element",
    "interlayer_shift_grid",
    "interstitial",
    "largest_empty_site",
    "minimum_distance",
    "perturbed_supercells",
    "primitive_layer",
    "random_alloy",
    "standard_layer",
    "substitution",
    "twist_angle",
    "twisted_bilayer",
    "vacancy",
]
