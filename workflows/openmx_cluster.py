"""DeepH with OpenMX on a SLURM cluster: OpenMX on perturbed supercells → DeepH-2 on GPUs → prediction and bands.

    verdi run workflows/openmx_cluster.py BASE.vasp TARGET.vasp --dft-code openmx@cluster --python-code deeph@cluster
        --overlap-code openmx-overlap@cluster [--validation SMALL.vasp] [--pseudo-family OpenMX-PBE19-VPS] [--orbital-family OpenMX-PBE19-PAO]
        [--protocol moderate] [--machines 1] [--mpiprocs 32] [--walltime 86400] [--gpus 4] [--queue Q] [--account A]

Before: a ``core.slurm`` computer with the two codes (``verdi computer setup``, ``verdi code create core.code.installed``;
the python code is an interpreter with aiida-deeph installed on the cluster), the VPS family
(``aiida-pseudo install family DIR OpenMX-PBE19-VPS -P pseudo.vps``) and the PAO family
(``OrbitalFamily.create_from_folder(DIR, "OpenMX-PBE19-PAO", basis={"C": "C6.0-s2p2d1", ...})``, see the docs). The
target's overlap comes from an overlap-only OpenMX run on ``--overlap-code`` (the DeepH patch of OpenMX 3.9.9, see
``deeph.openmx``).
With the daemon running the WorkChain is submitted and followed; ``verdi process show PK`` shows the whole chain.
"""

from aiida_deeph.tools.launch import cluster_main

cluster_main("openmx", __doc__)
