"""Fetching the registered sets: package files, the local data dir, else a pinned remote cached per user.

Downloads use urllib with a short timeout, so that importing safereason pulls in no HTTP stack and an offline
machine fails at once with a hint to point ``--data-dir`` at a local copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import _format_of
from safereason.errors import DataError

_GH = "https://raw.githubusercontent.com"
#: Seconds before a download gives up: an offline machine should fail at once, not hang.
DOWNLOAD_TIMEOUT_S = 10.0


def remote_url(remote: str) -> str:
    """The https URL of a pinned source; ``hf://owner/name@rev/path`` is a file of a hub dataset repo."""
    if not remote.startswith("hf://"):
        return remote
    owner, name_rev, path = remote[len("hf://"):].split("/", 2)
    name, rev = name_rev.split("@", 1)
    return f"https://huggingface.co/datasets/{owner}/{name}/resolve/{rev}/{path}"


def _download(url: str) -> bytes:
    """GET ``url`` with a short timeout (urllib, so that importing safereason pulls in no HTTP stack)."""
    import urllib.request

    headers = {"User-Agent": "safereason"}
    token = os.environ.get("HF_TOKEN")
    if token and url.startswith("https://huggingface.co/"):
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def _why(e: Exception) -> str:
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    if isinstance(e, TimeoutError):
        return f"timed out after {DOWNLOAD_TIMEOUT_S:g} s"
    return f"{type(e).__name__}: {e}"


def _cache_path(spec: BenchmarkSpec, url: str) -> Path:
    from safereason.paths import cache_dir

    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir() / "benchmarks" / spec.name / key / PurePosixPath(url).name


def _fetch_remote(spec: BenchmarkSpec, data_dir: Path | None) -> tuple[bytes, str]:
    """(bytes, url) of the pinned remote file: the user cache's copy if it is good, else a download."""
    assert spec.remote is not None
    url = remote_url(spec.remote)
    cached = _cache_path(spec, url)
    if cached.is_file():
        data = cached.read_bytes()
        if spec.sha256 is None or hashlib.sha256(data).hexdigest() == spec.sha256:
            return data, url
    try:
        data = _download(url)
    except Exception as e:
        missing = f"; {data_dir / spec.local_path} does not exist" if data_dir and spec.local_path else ""
        raise DataError(
            f"could not download {spec.name} from {url} ({_why(e)}; offline?){missing}. Point --data-dir or "
            f"SAFEREASON_DATA at a folder holding {spec.local_path}"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if spec.sha256 is not None and digest != spec.sha256:
        raise DataError(
            f"{url} has sha256 {digest}, not the pinned {spec.sha256}: the source changed. Use a local copy "
            f"via --data-dir ({spec.local_path})"
        )
    try:  # best effort: a read-only cache only costs a download next time
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
    except OSError:
        pass
    return data, url


def _read_registered(spec: BenchmarkSpec, data_dir: Path | None) -> tuple[bytes, str, str]:
    """(bytes, source, format) of a named set: package file, else local copy, else pinned remote."""
    if spec.resource is not None:
        from importlib import resources

        data = resources.files("safereason.data").joinpath(spec.resource).read_bytes()
        return data, f"builtin:safereason/data/{spec.resource}", _format_of(spec.resource)
    assert spec.local_path is not None
    if data_dir is not None:
        path = data_dir / spec.local_path
        if path.is_file():
            try:
                return path.read_bytes(), str(path.resolve()), _format_of(spec.local_path)
            except OSError as e:
                raise DataError(f"cannot read {path}: {e.strerror}") from None
    data, url = _fetch_remote(spec, data_dir)
    return data, url, _format_of(url)


# -- sets of more than one file -------------------------------------------------------------------

def _listing(files: dict[str, str]) -> bytes:
    """What a multi-file set's dataset hash is taken of: a ``sha256sum``-style listing (``<sha256>  <path>``,
    sorted by path) of every file used, so it changes with any file and not with where the data dir lies."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(files.items())).encode()


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def _fetch_file(spec: BenchmarkSpec, url: str, what: str) -> Path:
    """A pinned remote file (an image) in the user cache, downloaded once; its path, since prompts carry paths."""
    cached = _cache_path(spec, url)
    if cached.is_file():
        return cached
    try:
        data = _download(url)
    except Exception as e:
        raise DataError(
            f"could not download {what} {url} ({_why(e)}; offline?). Point --data-dir or SAFEREASON_DATA at a "
            f"folder holding {spec.local_path} and its images"
        ) from None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
    except OSError as e:
        raise DataError(f"cannot cache {what} at {cached}: {e.strerror}") from None
    return cached
