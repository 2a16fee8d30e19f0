"""One URI layer for local paths and ``gs://`` objects, through google-cloud-storage.

Credentials are Application Default Credentials (on Dataproc, the batch's service account); buckets
listed as anonymous (the public Sentinel-2 bucket) are read without credentials. Nothing here reads
a key file or a token: the client library finds ADC itself, and honours ``STORAGE_EMULATOR_HOST``
(with anonymous credentials) when tests point it at the GCS emulator.

Band files are downloaded whole to the executor's disk (CRC32C-verified) rather than read through
GDAL's ``/vsigs/``: the pipeline decodes every JPEG2000 tile of a band anyway, so a download moves the
same bytes in one stream instead of hundreds of range requests, and it authenticates exactly like
every other read (GDAL's own GCS authentication is what sank this product's prototype).

:class:`Storage` holds settings only, so it pickles into UDF closures; clients are created lazily,
once per process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from evi_udf.errors import StorageError

GS_SCHEME = "gs://"
# Total time one operation may spend retrying 429s, 5xx and connection errors (exponential backoff).
RETRY_DEADLINE_SECONDS = 300.0

# One client per process and (anonymous, project, emulator endpoint): clients are costly to create
# and safe to share; an emulator address set later (tests) gets its own client.
_CLIENTS: dict[tuple[bool, str | None, str | None], Any] = {}


@dataclasses.dataclass(frozen=True)
class GsPath:
    """A ``gs://bucket/key`` URI split into its parts."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"{GS_SCHEME}{self.bucket}/{self.key}"


def is_gs(uri: str) -> bool:
    """True for ``gs://`` URIs."""
    return uri.startswith(GS_SCHEME)


def parse_gs_uri(uri: str) -> GsPath:
    """Split ``gs://bucket/key``.

    Raises
    ------
    StorageError
        If the URI is not ``gs://`` or lacks a bucket or an object key.
    """
    if not is_gs(uri):
        raise StorageError(f"{uri}: not a gs:// URI")
    bucket, _, key = uri[len(GS_SCHEME) :].partition("/")
    if not bucket or not key:
        raise StorageError(f"{uri}: a gs:// URI needs a bucket and an object name (gs://bucket/path)")
    return GsPath(bucket, key)


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """What the client raises when a transfer fails after its retries (API, HTTP, disk, checksum)."""
    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.cloud.storage.exceptions import DataCorruption

    return (GoogleAPIError, requests.RequestException, OSError, DataCorruption)


def _retry() -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(RETRY_DEADLINE_SECONDS)


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """One file or object found by :meth:`Storage.list`: its URI and when it was last written (UTC)."""

    uri: str
    updated: dt.datetime


def _staging_name(target: Path) -> Path:
    # Unique per call: two writers publishing the same name never share (and clobber) a staging file.
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")


@dataclasses.dataclass(frozen=True)
class Storage:
    """Reads and publishes files by URI (local path or ``gs://``).

    Parameters
    ----------
    anonymous_buckets
        Buckets read without credentials (public data, e.g. ``gcp-public-data-sentinel-2``).
    project
        Billing/quota project for the client; ``None`` lets ADC decide.
    """

    anonymous_buckets: tuple[str, ...] = ()
    project: str | None = None

    def _bucket(self, name: str) -> Any:
        from google.cloud import storage

        anonymous = name in self.anonymous_buckets
        key = (anonymous, self.project, os.environ.get("STORAGE_EMULATOR_HOST"))
        if key not in _CLIENTS:
            _CLIENTS[key] = (
                storage.Client.create_anonymous_client()
                if anonymous
                else storage.Client(project=self.project)
            )
        return _CLIENTS[key].bucket(name)

    def _blob(self, uri: str) -> Any:
        path = parse_gs_uri(uri)
        return self._bucket(path.bucket).blob(path.key)

    def exists(self, uri: str) -> bool:
        """Whether a file or object exists."""
        if not is_gs(uri):
            return Path(uri).exists()
        try:
            return bool(self._blob(uri).exists(retry=_retry()))
        except _transfer_errors() as exc:
            raise StorageError(f"{uri}: cannot check existence ({exc})") from exc

    def read_bytes(self, uri: str) -> bytes:
        """The whole content of a small file (metadata XML, masks).

        Raises
        ------
        StorageError
            If it does not exist or cannot be read after retries; the message names the URI.
        """
        if not is_gs(uri):
            try:
                return Path(uri).read_bytes()
            except FileNotFoundError as exc:
                raise StorageError(f"{uri}: file not found") from exc
            except OSError as exc:
                raise StorageError(f"{uri}: cannot read ({exc.strerror or exc})") from exc
        from google.api_core import exceptions

        try:
            return self._blob(uri).download_as_bytes(checksum="crc32c", retry=_retry())
        except exceptions.NotFound as exc:
            raise StorageError(f"{uri}: object not found") from exc
        except _transfer_errors() as exc:
            raise StorageError(f"{uri}: cannot read ({exc})") from exc

    def fetch(self, uri: str, directory: Path) -> Path:
        """A local path for ``uri``: local files as they are, objects downloaded into ``directory``.

        Downloads are checked against the object's CRC32C and written under a temporary name first,
        so a partial download never looks complete.
        """
        if not is_gs(uri):
            return Path(uri)
        from google.api_core import exceptions

        path = parse_gs_uri(uri)
        parts = path.key.split("/")
        if path.key.startswith("/") or ".." in parts or "" in parts[:-1]:
            # The key becomes a local path under `directory`: it must not climb out of it.
            raise StorageError(
                f"{uri}: object name is not a plain relative path (no leading /, '//' or '..')"
            )
        target = directory / path.bucket / path.key
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = _staging_name(target)
        try:
            self._blob(uri).download_to_filename(str(partial), checksum="crc32c", retry=_retry())
            os.replace(partial, target)
        except exceptions.NotFound as exc:
            raise StorageError(f"{uri}: object not found") from exc
        except _transfer_errors() as exc:
            raise StorageError(f"{uri}: download failed ({exc})") from exc
        finally:
            partial.unlink(missing_ok=True)
        return target

    def publish(self, local: Path, uri: str, overwrite: bool) -> None:
        """Make a finished file visible under ``uri`` in one step.

        Local: copied next to the target under a temporary name, then renamed. ``gs://``: uploaded
        with a generation precondition, so a rerun or a second writer cannot silently replace an
        object: without ``overwrite`` the object must not exist (generation 0); with it, the upload
        replaces exactly the generation that was read. Preconditions also make the upload safe to
        retry.

        Raises
        ------
        StorageError
            If the object exists and ``overwrite`` is false, or the upload fails; names the URI.
        """
        if not is_gs(uri):
            target = Path(uri)
            if target.exists() and not overwrite:
                raise StorageError(f"{uri}: already exists (rerun with overwrite to replace it)")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                staging = _staging_name(target)
                try:
                    shutil.copyfile(local, staging)
                    os.replace(staging, target)
                finally:
                    staging.unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"{uri}: cannot publish ({exc.strerror or exc})") from exc
            return
        from google.api_core import exceptions

        blob = self._blob(uri)
        generation = 0
        if overwrite:
            try:
                blob.reload(retry=_retry())
                generation = blob.generation
            except exceptions.NotFound:
                generation = 0
        elif blob.exists(retry=_retry()):
            # The emulator does not enforce preconditions; GCS does. Check first so both agree.
            raise StorageError(f"{uri}: already exists (rerun with overwrite to replace it)")
        try:
            blob.upload_from_filename(str(local), if_generation_match=generation, retry=_retry())
        except exceptions.PreconditionFailed as exc:
            raise StorageError(f"{uri}: changed by another writer while publishing") from exc
        except _transfer_errors() as exc:
            raise StorageError(f"{uri}: upload failed ({exc})") from exc

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Every file or object under ``prefix`` (a folder or key prefix), at any depth.

        ``gs://``: one paged listing without a delimiter (1,000 objects per request), so the cost
        grows with the objects found, not with the folders. Local: a walk of the folder; a missing
        folder lists nothing. Temporary files of unfinished publications (``.*.partial``) are left
        out.

        Raises
        ------
        StorageError
            If the listing fails after retries; names the prefix.
        """
        if not is_gs(prefix):
            base = Path(prefix)
            found = []
            for folder, _, files in os.walk(base):
                for name in files:
                    if name.startswith(".") and name.endswith(".partial"):
                        continue
                    path = Path(folder) / name
                    try:
                        stamp = path.stat().st_mtime
                    except FileNotFoundError:
                        continue  # removed while listing
                    found.append(StoredObject(str(path), dt.datetime.fromtimestamp(stamp, dt.timezone.utc)))
            return sorted(found, key=lambda item: item.uri)
        bucket, _, key = prefix[len(GS_SCHEME) :].partition("/")
        if not bucket:
            raise StorageError(f"{prefix}: a gs:// prefix needs a bucket")
        try:
            blobs = self._bucket(bucket).list_blobs(prefix=key, retry=_retry())
            return [StoredObject(f"{GS_SCHEME}{bucket}/{blob.name}", blob.updated) for blob in blobs]
        except _transfer_errors() as exc:
            raise StorageError(f"{prefix}: cannot list ({exc})") from exc

    def delete(self, uri: str) -> None:
        """Remove a file or object; one that is already gone is not an error."""
        if not is_gs(uri):
            try:
                Path(uri).unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"{uri}: cannot delete ({exc.strerror or exc})") from exc
            return
        from google.api_core import exceptions

        try:
            self._blob(uri).delete(retry=_retry())
        except exceptions.NotFound:
            return
        except _transfer_errors() as exc:
            raise StorageError(f"{uri}: cannot delete ({exc})") from exc
