"""Fetching the registered sets: package files, the local data dir, else a pinned remote.

A file of a hub dataset (``hf://owner/name@revision/path``) comes through ``huggingface_hub.hf_hub_download``
at the pinned revision: its cache, its token handling (``HF_TOKEN``, ``hf auth login``) and its offline mode
(``HF_HUB_OFFLINE=1`` serves what is cached). Other pinned files (raw GitHub files at a commit) are fetched with
``huggingface_hub``'s HTTP session, with a short timeout, and kept in the user cache. Either way the bytes are
checked against the pinned sha256, and an offline machine fails at once with a hint to point ``--data-dir`` at
a local copy. The HTTP stack is imported only when something is downloaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from safereason.data.spec import BenchmarkSpec
from safereason.data.tables import _format_of
from safereason.errors import DataError

_GH = "https://raw.githubusercontent.com"
_HF = "hf://"
#: the hub's address in recorded sources (a mirror set with HF_ENDPOINT is transport, like a proxy)
_HF_ENDPOINT = "https://huggingface.co"
#: Seconds before a download gives up: an offline machine should fail at once, not hang.
DOWNLOAD_TIMEOUT_S = 10.0


def hub_file(remote: str) -> tuple[str, str, str] | None:
    """(repo_id, revision, filename) of a hub dataset file ``hf://owner/name@revision/path``, else None."""
    if not remote.startswith(_HF):
        return None
    owner, name_rev, path = remote[len(_HF):].split("/", 2)
    name, rev = name_rev.split("@", 1)
    return f"{owner}/{name}", rev, path


def remote_url(remote: str) -> str:
    """The https URL of a pinned source (the hub's ``resolve`` URL of a hub dataset file)."""
    hub = hub_file(remote)
    if hub is None:
        return remote
    from huggingface_hub import hf_hub_url

    repo_id, revision, filename = hub
    return hf_hub_url(repo_id, filename, repo_type="dataset", revision=revision, endpoint=_HF_ENDPOINT)


def _download(remote: str) -> bytes:
    """The bytes of a pinned remote: a hub dataset file through ``hf_hub_download`` (the hub's cache, token and
    offline mode), anything else through ``huggingface_hub``'s HTTP session with a short timeout."""
    hub = hub_file(remote)
    if hub is not None:
        from huggingface_hub import hf_hub_download

        repo_id, revision, filename = hub
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision,
                                    etag_timeout=DOWNLOAD_TIMEOUT_S)).read_bytes()
    from huggingface_hub import get_session

    response = get_session().get(remote, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True)
    response.raise_for_status()
    return response.content


def _why(e: Exception) -> str:
    """A short, one-line reason for a failed download."""
    try:  # an HTTP status error carries its response (some libraries' errors raise when asked without one)
        status = getattr(getattr(e, "response", None), "status_code", None)
    except Exception:
        status = None
    if isinstance(status, int):
        return f"HTTP {status}"
    reason = getattr(e, "reason", None)  # an OSError-style error with a reason
    if reason is not None:
        return str(reason)
    if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:
        return f"timed out after {DOWNLOAD_TIMEOUT_S:g} s"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _cache_path(spec: BenchmarkSpec, url: str) -> Path:
    from safereason.paths import cache_dir

    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir() / "benchmarks" / spec.name / key / PurePosixPath(url).name


def _fetch_remote(spec: BenchmarkSpec, data_dir: Path | None) -> tuple[bytes, str]:
    """(bytes, url) of the pinned remote file: the user cache's copy if it is good, else a download."""
    assert spec.remote is not None
    url = remote_url(spec.remote)
    hub = hub_file(spec.remote) is not None  # the hub's own cache holds it
    cached = _cache_path(spec, url)
    if not hub and cached.is_file():
        data = cached.read_bytes()
        if spec.sha256 is None or hashlib.sha256(data).hexdigest() == spec.sha256:
            return data, url
    try:
        data = _download(spec.remote)
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
    if hub:
        return data, url
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
