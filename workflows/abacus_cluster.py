"""DeepH with ABACUS on a SLURM cluster: ABACUS on perturbed supercells → DeepH-2 on GPUs → prediction and bands.

    verdi run workflows/abacus_cluster.py BASE.vasp TARGET.vasp --dft-code abacus@cluster --python-code deeph@cluster
        [--validation SMALL.vasp] [--pseudo-family SG15-ONCV-PBE-1.0] [--orbital-family SG15-ONCV-PBE-1.0-DZP]
        [--protocol moderate] [--machines 1] [--mpiprocs 32] [--walltime 86400] [--gpus 4] [--queue Q] [--account A]

Before: a ``core.slurm`` computer with the two codes, the UPF family (``aiida-pseudo install family DIR SG15-ONCV-PBE-1.0 -P
pseudo.upf``) and the numerical-orbital family (``OrbitalFamily.create_from_folder(DIR, "SG15-ONCV-PBE-1.0-DZP")`` with
the ``.orb`` files, see the docs); ABACUS ≥ 3.10 writes H(R), S(R) with ``out_mat_hs2 1``. The target's overlap comes
from an overlap-only ABACUS run (``deeph.abacus`` with ``settings: {overlap_only: True}``). With the daemon running
the WorkChain is submitted and followed; ``verdi process show PK`` shows the whole chain.
"""

from aiida_deeph.tools.launch import cluster_main

cluster_main("abacus", __doc__)
