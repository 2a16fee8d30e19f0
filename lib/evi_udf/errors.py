"""The one error hierarchy of the pipeline.

Every failure the pipeline raises on purpose is an :class:`EviError`. Code deep in the library raises
the most specific subclass with a message that names the scene, file or setting at fault; only the
boundaries (the UDF edge, the job entry point, the CLI tools) catch them and turn them into status
rows or exit codes.
"""

from __future__ import annotations


class EviError(Exception):
    """Base class of every error the pipeline raises deliberately.

    ``stage`` names the pipeline step that failed; it becomes the ``stage`` column of failure rows.
    """

    stage = "pipeline"


class ConfigError(EviError, ValueError):
    """A setting is missing, unknown or has a bad value. The message names the key."""

    stage = "config"


class CatalogError(EviError):
    """The Sentinel-2 index could not be read or does not have the expected shape."""

    stage = "catalog"


class IndexSchemaError(CatalogError):
    """The index file's header is not the 14-column Sentinel-2 index header."""


class SampleError(EviError):
    """The local sample archive could not be generated with the requested options."""

    stage = "sample"


class MetadataError(EviError):
    """A product or tile metadata file is missing, malformed or lacks a required field."""

    stage = "metadata"


class RasterReadError(EviError):
    """A band or mask could not be opened or decoded. The message names the file."""

    stage = "read"


class RasterWriteError(EviError):
    """An output raster could not be written. The message names the destination."""

    stage = "write"


class SinkError(EviError):
    """The result tables could not be written. The message names the table or location."""

    stage = "sink"


class StorageError(EviError):
    """A file or object could not be read, downloaded or published. The message names the URI."""

    stage = "storage"


class ZonesError(EviError):
    """The zones file could not be read or is unusable as a whole (no id column, unknown CRS). The
    message names the file and the column or setting; problems of single zones are rejected rows."""

    stage = "zones"
