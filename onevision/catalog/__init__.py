"""Catalog directory format: the one contract between data sets and every stage."""

from onevision.catalog.format import Catalog, CatalogError, load_catalog, write_catalog

__all__ = ["Catalog", "CatalogError", "load_catalog", "write_catalog"]
