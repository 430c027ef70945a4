"""Test support: a directory updated the way the kubelet's AtomicWriter updates a ConfigMap or Secret volume.

`name -> ..data/name`, `..data -> ..<timestamp>/`; an update writes a new timestamped
directory, renames a new `..data` symlink over the old one (the one atomic step), then
removes the old directory. Files 0664, directories 0775: readable by the tests' unprivileged
user as the kubelet's defaultMode 0644 volumes are by any pod user.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class KubeletVolume:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.generation = 0
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o775)

    def publish(self, files: dict[str, bytes]) -> None:
        """The volume's content becomes exactly `files`, in one step for a reader."""
        self.generation += 1
        while (self.directory / f"..2026_12_07_{self.generation:04d}").exists():  # another writer's
            self.generation += 1
        version = self.directory / f"..2026_12_07_{self.generation:04d}"
        version.mkdir()
        os.chmod(version, 0o775)
        for name, data in files.items():
            (version / name).write_bytes(data)
            os.chmod(version / name, 0o664)
        data_link = self.directory / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        os.symlink(version.name, self.directory / "..data_tmp")
        os.rename(self.directory / "..data_tmp", data_link)
        for name in files:
            if not (self.directory / name).is_symlink():
                os.symlink(f"..data/{name}", self.directory / name)
        for entry in os.listdir(
            self.directory
        ):  # names no longer published go, as the kubelet removes them
            if (
                not entry.startswith("..")
                and entry not in files
                and (self.directory / entry).is_symlink()
            ):
                (self.directory / entry).unlink()
        if old is not None:
            shutil.rmtree(self.directory / old)

    def path(self, name: str) -> Path:
        return self.directory / name
