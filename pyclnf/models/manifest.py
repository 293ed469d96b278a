"""Manifest of the OpenFace 2.2.0 model files that PyCLNF uses.

OpenFace's model files cannot ship with PyCLNF: their licence forbids
redistribution. This module only holds *metadata* about them: where each file
sits in an OpenFace model folder, its size and SHA-256 in the OpenFace 2.2.0
release, and the official addresses it can be downloaded from.

Paths are relative to an OpenFace *model folder* (``/``-separated, as in
OpenFace's source tree, where the folder is
``lib/local/LandmarkDetector/model``). So ``patch_experts/ccnf_patches_0.25_general.txt``
is ``lib/local/LandmarkDetector/model/patch_experts/ccnf_patches_0.25_general.txt``
in OpenFace's repository and ``<model folder>/patch_experts/...`` on a user's disk.

Files kept in OpenFace's git repository are downloaded from the repository at
the tag ``OpenFace_2.2.0``; the four CEN patch-expert files
(``patch_experts/cen_patches_*_of.dat``, 60–154 MB each) are not in git and
come from the Dropbox and OneDrive mirrors listed in OpenFace's
``download_models.sh`` / ``download_models.ps1``.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union
from urllib.parse import quote

from ._hashing import file_sha256

__all__ = [
    "OPENFACE_VERSION",
    "OPENFACE_TAG",
    "SOURCE_TREE_PREFIX",
    "ModelFile",
    "Manifest",
    "release_manifest",
    "manifest_from_dir",
    "as_manifest",
]

#: Version of OpenFace whose model files the manifest describes.
OPENFACE_VERSION = "2.2.0"
#: Git tag of that release in OpenFace's repository.
OPENFACE_TAG = "OpenFace_2.2.0"
#: Where the model folder sits in OpenFace's source tree.
SOURCE_TREE_PREFIX = "lib/local/LandmarkDetector/model"

_REPO = "TadasBaltrusaitis/OpenFace"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HASH_ORIGINS = ("published", "computed")


@dataclass(frozen=True)
class ModelFile:
    """One file of an OpenFace model folder.

    Parameters
    ----------
    path : str
        Path relative to the model folder, ``/``-separated, without ``..``
        (e.g. ``"patch_experts/cen_patches_0.25_of.dat"``).
    size : int
        Size in bytes.
    sha256 : str
        SHA-256 of the file's bytes, 64 lowercase hex digits.
    urls : tuple of str
        Official download addresses, tried in order. May be empty (a manifest
        made from a local folder); then only a ``mirror`` can download it.
    hash_origin : {"published", "computed"}
        ``"published"``: the hash comes from a published release listing;
        ``"computed"``: computed from a copy that matches those.

    Raises
    ------
    ValueError
        If the path is absolute, contains ``..``, ``\\`` or is empty, the size
        is negative, or the hash is not 64 hex digits.
    """

    path: str
    size: int
    sha256: str
    urls: tuple = ()
    hash_origin: str = "computed"

    def __post_init__(self):
        p = self.path
        if not isinstance(p, str) or not p:
            raise ValueError(f"ModelFile path must be a non-empty str, got {p!r}")
        parts = p.split("/")
        if p.startswith("/") or "\\" in p or ":" in parts[0] or any(
            part in ("", ".", "..") for part in parts
        ):
            raise ValueError(
                f"ModelFile path must be relative, '/'-separated and without '..', "
                f"got {p!r}"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"ModelFile size must be an int >= 0, got {self.size!r} for {p}")
        if not isinstance(self.sha256, str) or not _SHA256_RE.match(self.sha256):
            raise ValueError(
                f"ModelFile sha256 must be 64 lowercase hex digits, got {self.sha256!r} for {p}"
            )
        if self.hash_origin not in _HASH_ORIGINS:
            raise ValueError(
                f"ModelFile hash_origin must be one of {_HASH_ORIGINS}, got {self.hash_origin!r}"
            )
        object.__setattr__(self, "urls", tuple(self.urls))

    @property
    def source_path(self) -> str:
        """Path of the file in OpenFace's source tree
        (``lib/local/LandmarkDetector/model/<path>``)."""
        return f"{SOURCE_TREE_PREFIX}/{self.path}"

    def mirror_url(self, base_url: str) -> str:
        """Address of the file on a mirror of OpenFace's source tree.

        Parameters
        ----------
        base_url : str
            Base address under which every file is found at its path in
            OpenFace's source tree, e.g. ``"https://mirror.example.org/openface"``.

        Returns
        -------
        str
            ``<base_url>/lib/local/LandmarkDetector/model/<path>``.
        """
        return base_url.rstrip("/") + "/" + quote(self.source_path, safe="/")


@dataclass(frozen=True)
class Manifest:
    """An ordered set of :class:`ModelFile`, one per path.

    Parameters
    ----------
    files : sequence of ModelFile
        The files; paths must be unique.
    name : str
        Human-readable name used in messages.

    Examples
    --------
    >>> m = release_manifest()
    >>> m["main_ceclm_general.txt"].size
    335
    """

    files: tuple
    name: str = f"OpenFace {OPENFACE_VERSION}"

    def __post_init__(self):
        files = tuple(self.files)
        for f in files:
            if not isinstance(f, ModelFile):
                raise TypeError(f"Manifest files must be ModelFile, got {type(f).__name__}")
        seen = set()
        for f in files:
            if f.path in seen:
                raise ValueError(f"Manifest lists {f.path!r} twice")
            seen.add(f.path)
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "_by_path", {f.path: f for f in files})

    def __iter__(self) -> Iterator[ModelFile]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, path) -> bool:
        return path in self._by_path

    def __getitem__(self, path: str) -> ModelFile:
        try:
            return self._by_path[path]
        except KeyError:
            raise KeyError(f"{path!r} is not in the {self.name} manifest") from None

    @property
    def paths(self) -> tuple:
        """The relative paths, in manifest order."""
        return tuple(f.path for f in self.files)

    @property
    def total_size(self) -> int:
        """Sum of the file sizes in bytes."""
        return sum(f.size for f in self.files)

    def subset(self, paths: Iterable[str]) -> "Manifest":
        """Manifest of only the given paths (in the order given).

        Raises
        ------
        KeyError
            If a path is not in this manifest.
        """
        return Manifest(tuple(self[p] for p in paths), name=self.name)


def _in_git(path: str, size: int, origin: str, sha256: str) -> ModelFile:
    source = f"{SOURCE_TREE_PREFIX}/{path}"
    return ModelFile(
        path,
        size,
        sha256,
        (
            f"https://raw.githubusercontent.com/{_REPO}/{OPENFACE_TAG}/{source}",
            f"https://github.com/{_REPO}/raw/{OPENFACE_TAG}/{source}",
        ),
        origin,
    )


def _on_mirrors(path: str, size: int, origin: str, sha256: str, *, dropbox, onedrive):
    name = path.rsplit("/", 1)[-1]
    resid, authkey = onedrive
    return ModelFile(
        path,
        size,
        sha256,
        (
            f"https://www.dropbox.com/s/{dropbox}/{name}?dl=1",
            "https://onedrive.live.com/download?cid=2E2ADA578BFF6E6E"
            f"&resid=2E2ADA578BFF6E6E%21{resid}&authkey={authkey}",
        ),
        origin,
    )


# The release table, from shared/openface-2.2.0-files.tsv (path in the model folder, size in
# bytes, hash origin, SHA-256). Building it costs no disk or network access.
_RELEASE_FILES = (
    _in_git("cen_general.txt", 301, "computed",
            "3c30ddb49f531508c37f74be303f30997264f68f13f277a6f58e4e6f32979ade"),
    _in_git("clnf_general.txt", 234, "computed",
            "3e38c393427481b6c715f491de1fe76ebf9d283afddc2bf7ec7765bc7d8a2c23"),
    _in_git("detection_validation/validator_cnn.txt", 2074228, "computed",
            "29751dd4128978a1b351f09f15ae2d78e3e45169dd1e2dede60a55cc3f39a3c4"),
    _in_git("detection_validation/validator_cnn_68.txt", 2328608, "published",
            "3e422e6bf1659dfd83231e988328635e62eb0c4f9ae6b3979052ebc7ee4b287a"),
    _in_git("early_term_cen_of.txt", 133, "computed",
            "cf6e97faf33b4ac3f485a1ecdd828fe508a806859422137f678b7a6156096a2b"),
    _in_git("haarAlign.txt", 117, "computed",
            "354625bd2a6cbdb1fc7a62352ad74e94c79744c9296e682cb8f6100d54213ffa"),
    _in_git("main_ceclm_general.txt", 335, "computed",
            "52f38548cffab1731f80e9e71f22a8b29373a2750eb6dc718069d56e82997543"),
    _in_git("main_clnf_general.txt", 689, "computed",
            "532753cc2238d3e3dc398fff09b7b385a7edd7306a1edc2a22dac3ed2abdeb6e"),
    _in_git("model_eye/clnf_left_synth.txt", 164, "computed",
            "5f652def0b109849c510c0b8f17fb779d5487f7a2a927b772a6a290aed929a0e"),
    _in_git("model_eye/clnf_right_synth.txt", 151, "computed",
            "b1453f8272bdd601ef54f569c2b35490203f8d625c99e2667abd74e8769da030"),
    _in_git("model_eye/main_clnf_synth_left.txt", 36, "computed",
            "974004db5c87046be362a9802d2c8241c168ba3c1b19d2915ac161ae197bb252"),
    _in_git("model_eye/main_clnf_synth_right.txt", 37, "computed",
            "8f116d8df1f32a9022b4e4b9ce3b134774b0732441ea6585e90b75628e86ee10"),
    _in_git("model_eye/patch_experts/ccnf_patches_1.00_synth_lid_.txt", 104368, "published",
            "bc5f628dbcd0f24eabe5e2b7f2a6995c513ebb93ab63b03449c5f5f05a777939"),
    _in_git("model_eye/patch_experts/ccnf_patches_1.50_synth_lid_.txt", 104368, "published",
            "601a74b91930c2648676615278b959eb67f860e9757b169ee59bd41ac994cb9b"),
    _in_git("model_eye/patch_experts/left_ccnf_patches_1.00_synth_lid_.txt", 104384, "published",
            "8fe3229cda73dc49fcc27635fb875941e4d28b342c0f9f49bbcfc8ab9711cc07"),
    _in_git("model_eye/patch_experts/left_ccnf_patches_1.50_synth_lid_.txt", 104384, "published",
            "1c728e667b3e00ce5feb4eb8a5f68c174af5bb1f80b7ee8d3d01df6023917581"),
    _in_git("model_eye/pdms/pdm_28_eye_3D_closed.txt", 9318, "published",
            "8034805a0de072dafd0f6daecd71ee3f44292bc860bff6425725feac63e045f2"),
    _in_git("model_eye/pdms/pdm_28_l_eye_3D_closed.txt", 9304, "published",
            "eaf275c1286d5e03ea695b8250bffcef95084bf67598dfc9f03121d16b9b713f"),
    _in_git("model_inner/clnf_inner.txt", 79, "computed",
            "9e6ba849ef773a314471bec98f486f461b43b2d72890afb12ad93482eb0698f1"),
    _in_git("model_inner/main_clnf_inner.txt", 31, "computed",
            "d659390a75c3cf92a1165ed700a2228f9f588671d67d0862b3ff7b0fbfe96a60"),
    _in_git("model_inner/patch_experts/ccnf_patches_1.00_inner.txt", 2043100, "published",
            "79eb8ab716abe420a1604c8db8c107e0b9774bedfd91f595875e6bad0d37156c"),
    _in_git("model_inner/pdms/pdm_51_inner.txt", 48934, "published",
            "28412e9dda64e95a5fab618ecda2b5dc1802187da4894d27965715ab361cb2f7"),
    _in_git("mtcnn_detector/MTCNN_detector.txt", 42, "computed",
            "7dd20c7aa0335e59eeb6947c2bd94ef06c41f643aff428d36800fa1f09c65d5e"),
    _in_git("mtcnn_detector/ONet.dat", 1729592, "computed",
            "4c853ae5b461abe4d41f1cd77625895cd71452956c63c622fd75a3b820fb1d31"),
    _in_git("mtcnn_detector/PNet.dat", 35088, "computed",
            "22dfd0a96ec983e99b21c0e214d89d55ea9a471eedd53e5a48203f22bcb4c489"),
    _in_git("mtcnn_detector/RNet.dat", 454912, "computed",
            "95e9c4203ca0a08c84520fa5fd658834213ed2453a7359f4d9514a06762f91e9"),
    _in_git("patch_experts/ccnf_patches_0.25_general.txt", 2429528, "published",
            "18f4a62387a9cadcb49177db5f8726d73f3d4675bed60cb965e8256590553a48"),
    _in_git("patch_experts/ccnf_patches_0.35_general.txt", 2429528, "computed",
            "ec26c1590f7992566943ad252af0ebb9e569095ce277d8addbc6202a36fe5a33"),
    _in_git("patch_experts/ccnf_patches_0.5_general.txt", 2429528, "computed",
            "0ae39776c24b1e1de2a03ac4650baddec7ae84a45dec77ab30c97431fdccfebf"),
    _on_mirrors("patch_experts/cen_patches_0.25_of.dat", 60602360, "published",
                "99d3df9888115428075de7b8f1bc86176881de640c2fdf47e2ab0cee556661bf",
                dropbox="7na5qsjzz8yfoer", onedrive=("53072", "AKqoZtcN0PSIZH4")),
    _on_mirrors("patch_experts/cen_patches_0.35_of.dat", 60602360, "published",
                "1070bff51b077ee6a18ce8e1ebbc6f568e1a7a469f6911a8263413878b3df469",
                dropbox="k7bj804cyiu474t", onedrive=("53079", "ANpDR1n3ckL_0gs")),
    _on_mirrors("patch_experts/cen_patches_0.50_of.dat", 154289792, "published",
                "3f08124067e326e83e3261a55c79493e745b01138c9c1b59713dd9b17424168e",
                dropbox="ixt4vkbmxgab1iu", onedrive=("53074", "AGi-e30AfRc_zvs")),
    _on_mirrors("patch_experts/cen_patches_1.00_of.dat", 154289792, "published",
                "bed961bbfa2cc41a709d44c1d1d8a92b2537bc46f2fd6ab430c137fedd0e21b0",
                dropbox="2t5t1sdpshzfhpj", onedrive=("53070", "AD6KjtYipphwBPc")),
    _in_git("pdms/In-the-wild_aligned_PDM_68.txt", 69023, "published",
            "b9eafb292b18505b55cdbc5d8ba45413709cd300cf3e7e8d1946cd0f5c5b94b1"),
    _in_git("tris_68.txt", 5351, "computed",
            "dca0c54fbd7683444f39534f803e037ba1df80a5cfd72ce8101cb7ff58e54193"),
    _in_git("tris_68_full.txt", 1076, "computed",
            "d79b0c786bf497ddf18b97080e5949c67781ca1c017e558374883a1821b17181"),
)


@functools.lru_cache(maxsize=1)
def release_manifest() -> Manifest:
    """The OpenFace 2.2.0 model files PyCLNF uses, with release sizes and hashes.

    Returns
    -------
    Manifest
        36 files (about 450 MB in all, most of it the four CEN files).
    """
    return Manifest(_RELEASE_FILES, name=f"OpenFace {OPENFACE_VERSION} release")


def manifest_from_dir(
    model_dir: Union[str, os.PathLike],
    paths: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
) -> Manifest:
    """Manifest describing the files as they are in a folder.

    Hashes every file, so this reads all their bytes. Useful to pin a set of
    files that differ from the release (custom-trained models, test
    stand-ins) and install them from a ``mirror``.

    Parameters
    ----------
    model_dir : str or os.PathLike
        An OpenFace-layout model folder.
    paths : sequence of str, optional
        Relative paths to include; by default every file below ``model_dir``
        (sorted, ``.part`` files left out).
    name : str, optional
        Name of the manifest; the folder path by default.

    Returns
    -------
    Manifest
        Files with their size and SHA-256 as found, without download URLs.

    Raises
    ------
    FileNotFoundError
        If ``model_dir`` or one of ``paths`` does not exist.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder {root} does not exist")
    if paths is None:
        paths = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(".part")
        )
    files = []
    for rel in paths:
        fp = root / rel
        files.append(ModelFile(rel, fp.stat().st_size, file_sha256(fp)))
    return Manifest(tuple(files), name=name or str(root))


def as_manifest(manifest) -> Manifest:
    """Normalise a ``manifest=`` argument.

    Parameters
    ----------
    manifest : Manifest, iterable of ModelFile or None
        ``None`` means :func:`release_manifest`.

    Returns
    -------
    Manifest

    Raises
    ------
    TypeError
        If ``manifest`` is neither of those.
    """
    if manifest is None:
        return release_manifest()
    if isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, (str, bytes, os.PathLike)):
        raise TypeError(
            f"manifest must be a Manifest, an iterable of ModelFile or None, "
            f"got {type(manifest).__name__}"
        )
    try:
        return Manifest(tuple(manifest))
    except TypeError:
        raise TypeError(
            f"manifest must be a Manifest, an iterable of ModelFile or None, "
            f"got {type(manifest).__name__}"
        ) from None
