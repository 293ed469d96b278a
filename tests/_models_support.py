"""Test support for ``pyclnf.models``: the shared model folder and a local HTTP
server that serves it at OpenFace source-tree paths, with injectable faults.

Nothing here reaches outside the machine: the server listens on 127.0.0.1 and
the fixtures clear proxy variables so urllib talks to it directly.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

import pytest

from pyclnf.models.manifest import SOURCE_TREE_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The four CEN files; the shared folder holds stand-ins that differ from the release.
CEN_PATHS = tuple(f"patch_experts/cen_patches_{s}_of.dat" for s in ("0.25", "0.35", "0.50", "1.00"))

#: Small files of the release used by the fast tests (bytes: 335, 5351, 69023).
SMALL_PATHS = ("main_ceclm_general.txt", "tris_68.txt", "pdms/In-the-wild_aligned_PDM_68.txt")
#: The file used for interrupted transfers (69023 bytes).
RESUME_PATH = "pdms/In-the-wild_aligned_PDM_68.txt"

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
# Read once at import, before any test's monkeypatch can change it.
_MODEL_DIR_AT_START = os.environ.get("PYCLNF_MODEL_DIR", "").strip()


def shared_model_dir() -> Path:
    """The OpenFace model folder the tests read.

    ``$PYCLNF_MODEL_DIR`` if set when the tests started, else ``<repo>/../shared/openface-model``.
    If it is missing the test is skipped, except under ``CI=true`` where it
    fails: CI must have the data.
    """
    env = _MODEL_DIR_AT_START
    folder = Path(env) if env else REPO_ROOT.parent / "shared" / "openface-model"
    if not (folder / "main_clnf_general.txt").is_file():
        msg = (f"OpenFace model folder for the tests not found at {folder} "
               f"(set PYCLNF_MODEL_DIR or provide ../shared/openface-model)")
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return folder


def copy_subset(src: Path, dst: Path, paths) -> Path:
    """Copy ``paths`` (relative) from ``src`` into ``dst``; return ``dst``."""
    for rel in paths:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    return dst


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str  # relative to the model folder, or the raw path if outside it
    range: Optional[str]


@dataclass
class Fault:
    """A fault injected for one file.

    kind : "404" | "corrupt" | "drop" | "close" | "ignore_range" | "416" | "bad_range" \
           | "overlong"
        404: answer 404. corrupt: same size, one byte flipped. drop: send the
        headers with the full length, then ``after`` bytes of the body, then
        close. close: close the connection without answering. ignore_range:
        answer a Range request with the whole file (200). 416: answer a Range
        request with 416. bad_range: answer a Range request with 206 but the
        whole file (``Content-Range: bytes 0-...``). overlong: the file plus
        extra bytes, without Content-Length, ended by closing the connection.
        slow: the body in 2 KiB pieces, ``after`` milliseconds apart (so that
        concurrent installs overlap).
    times : int or None
        How many requests it applies to (None: all).
    """

    kind: str
    after: int = 0
    times: Optional[int] = None


class ModelServer(ThreadingHTTPServer):
    """Serves ``root/<path>`` at ``/lib/local/LandmarkDetector/model/<path>``."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root)
        self.lock = threading.Lock()
        self.requests: list = []
        self.faults: dict = {}

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def url_of(self, rel: str) -> str:
        return f"{self.base_url}/{SOURCE_TREE_PREFIX}/{rel}"

    def set_fault(self, rel: str, kind: str, after: int = 0, times: Optional[int] = None):
        with self.lock:
            self.faults[rel] = Fault(kind, after, times)

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def requests_for(self, rel: str) -> list:
        with self.lock:
            return [r for r in self.requests if r.path == rel]

    def _take_fault(self, rel: str) -> Optional[Fault]:
        fault = self.faults.get(rel)
        if fault is None:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self.faults[rel]
        return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _send_status(self, code: int, headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        srv: ModelServer = self.server
        path = unquote(urlsplit(self.path).path)
        prefix = f"/{SOURCE_TREE_PREFIX}/"
        rel = path[len(prefix):] if path.startswith(prefix) else path
        range_header = self.headers.get("Range")
        with srv.lock:
            srv.requests.append(Seen(rel, range_header))
            fault = srv._take_fault(rel)
        file = srv.root / rel
        if (not path.startswith(prefix) or ".." in rel.split("/") or not file.is_file()
                or (fault and fault.kind == "404")):
            self._send_status(404)
            return
        if fault and fault.kind == "close":
            self.close_connection = True
            return
        data = file.read_bytes()
        if fault and fault.kind == "corrupt":
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        kind = fault.kind if fault else None
        if kind == "overlong":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data + b"extra bytes")
            self.close_connection = True
            return
        if range_header and kind == "416":
            self._send_status(416, [("Content-Range", f"bytes */{len(data)}")])
            return
        if range_header and kind == "bad_range":
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        start = 0
        if range_header and kind != "ignore_range":
            m = re.fullmatch(r"bytes=(\d+)-", range_header.strip())
            if not m:
                self._send_status(400)
                return
            start = int(m.group(1))
            if start >= len(data):
                self._send_status(416, [("Content-Range", f"bytes */{len(data)}")])
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if kind == "slow":
            for i in range(0, len(body), 2048):
                self.wfile.write(body[i:i + 2048])
                self.wfile.flush()
                time.sleep(fault.after / 1000)
            return
        if fault and fault.kind == "drop":
            self.wfile.write(body[:fault.after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def no_proxy(monkeypatch):
    """Make urllib connect to 127.0.0.1 directly whatever the environment says."""
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def model_server(no_proxy):
    """A :class:`ModelServer` over the shared model folder, on 127.0.0.1."""
    server = ModelServer(shared_model_dir())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No PyCLNF variables, and HOME / XDG_DATA_HOME inside tmp_path, so that
    no test can read or write the real per-user model folder."""
    monkeypatch.delenv("PYCLNF_MODEL_DIR", raising=False)
    monkeypatch.delenv("PYCLNF_ACCEPT_OPENFACE_LICENSE", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("LOCALAPPDATA", str(home / "AppData" / "Local"))
    return home
