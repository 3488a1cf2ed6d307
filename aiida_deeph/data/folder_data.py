"""A directory kept in the node repository, each file's sha256 recorded so a tampered copy is caught on load."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from aiida import orm


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksummedFolderData(orm.Data):
    """Base of the dataset and model nodes: a folder in the repository with per-file sha256 in the attributes."""

    def _store_folder(self, folder: str | os.PathLike, names: tuple[str, ...] | None = None) -> None:
        """Store every file below ``folder`` (or only the top-level ``names`` present)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a directory")
        checksums = {}
        files = [folder / n for n in names if (folder / n).is_file()] if names else folder.rglob("*")
        for path in sorted(p for p in files if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            self.base.repository.put_object_from_file(str(path), relative)
            checksums[relative] = sha256_of(path)
        self.base.attributes.set("sha256", checksums)

    @property
    def checksums(self) -> dict[str, str]:
        return self.base.attributes.get("sha256")

    def export(self, path: str | os.PathLike, verify: bool = True) -> Path:
        """Write the folder to ``path``; with ``verify``, raise if any file differs from its recorded sha256."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for relative, expected in self.checksums.items():
            target = path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.base.repository.open(relative, "rb") as source, open(target, "wb") as handle:
                shutil.copyfileobj(source, handle)
            if verify and sha256_of(target) != expected:
                raise ValueError(f"{relative} of {self.__class__.__name__}<{self.pk}> fails its sha256 check")
        return path
