"""Files that ship inside the package (the default budgets, the reference leaderboards).

They are read through :mod:`importlib.resources`, so they are found the same way from a source
checkout, an editable install and an installed wheel. Callers get a real filesystem path (the
budgets file is hashed into ``config.json`` and sent to Dask workers by path); when the package
is imported from an archive, the file is copied once into ``$DECATHLON_HOME/package-data/VERSION``.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from decathlon import files


def data_file(*parts: str, package: str = "decathlon") -> Path:
    """The path of the packaged file ``parts`` (for example ``("leaderboards", "x.csv")``)."""
    resource = resources.files(package)
    for part in parts:
        resource = resource / part
    if isinstance(resource, Path):
        return resource
    from decathlon import __version__  # only for the rare zipped install
    from decathlon.environments import home

    target = home() / "package-data" / __version__ / package / Path(*parts)
    if not target.is_file() and resource.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(resource) as source, files.replacing(target) as tmp:
            shutil.copyfile(source, tmp)
    return target
