"""aiida-deeph: DeepH deep-learning DFT Hamiltonians as provenance-tracked AiiDA workflows."""

__version__ = "0.1.0"
