"""Readers and writers of DFT outputs and the DeepH formats. Importable without AiiDA."""

from .deeph_format import BlockMatrix, DeepHFormatError, DeepHStructure
from .legacy_format import write_legacy

__all__ = ["BlockMatrix", "DeepHFormatError", "DeepHStructure", "write_legacy"]
