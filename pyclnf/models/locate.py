"""Where OpenFace's model files live on this machine.

PyCLNF looks for an OpenFace *model folder* (the folder that holds
``main_clnf_general.txt``, ``main_ceclm_general.txt``, ``patch_experts/`` ...,
i.e. ``lib/local/LandmarkDetector/model`` of OpenFace's source tree):

1. the ``model_dir`` argument, if given;
2. else the folder named by the environment variable ``PYCLNF_MODEL_DIR``;
3. else a per-user data folder by operating-system convention, as
   :mod:`platformdirs` gives it:

   - Linux and other Unix: ``$XDG_DATA_HOME/pyclnf/openface-2.2.0``
     (``~/.local/share/pyclnf/openface-2.2.0`` when ``XDG_DATA_HOME`` is unset);
   - macOS: ``~/Library/Application Support/pyclnf/openface-2.2.0``;
   - Windows: ``%LOCALAPPDATA%\\pyclnf\\openface-2.2.0``.

:func:`user_cache_dir` is PyCLNF's per-user cache folder (exports, the
benchmarked backend choice), from platformdirs too unless ``$PYCLNF_CACHE_DIR``
is set. Every per-user folder of PyCLNF comes from this module.

The same rule serves ``pyclnf models install``, ``pyclnf models verify`` and
``CLNF()``. Nothing here touches the network; :func:`find_model_dir` only
checks that a few files exist (use :func:`pyclnf.models.verify_models` to
check their contents).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Union

import platformdirs

from ..errors import ModelNotFoundError
from .manifest import OPENFACE_VERSION, SOURCE_TREE_PREFIX

__all__ = [
    "MODEL_DIR_ENV",
    "CACHE_DIR_ENV",
    "INSTALL_COMMAND",
    "user_data_dir",
    "user_cache_dir",
    "default_model_dir",
    "openface_model_folder",
    "find_model_dir",
]

#: Environment variable naming the model folder; overrides the per-user default.
MODEL_DIR_ENV = "PYCLNF_MODEL_DIR"
#: Environment variable naming PyCLNF's cache folder; overrides the per-user default.
CACHE_DIR_ENV = "PYCLNF_CACHE_DIR"
#: The command that installs the models (quoted in error messages).
INSTALL_COMMAND = "pyclnf models install"

_APP_NAME = "pyclnf"
_SUBFOLDER = f"openface-{OPENFACE_VERSION}"
# Files that mark a folder as an OpenFace model folder.
_MARKERS = ("main_clnf_general.txt", "main_ceclm_general.txt")

PathLike = Union[str, "os.PathLike[str]"]


def user_data_dir() -> Path:
    """Per-user folder for PyCLNF's copy of the OpenFace models.

    Ignores ``PYCLNF_MODEL_DIR``; see :func:`default_model_dir` for the folder
    actually used.

    Returns
    -------
    pathlib.Path
        ``platformdirs.user_data_dir("pyclnf") / "openface-2.2.0"``. Not created.
    """
    return Path(platformdirs.user_data_dir(_APP_NAME, appauthor=False)) / _SUBFOLDER


def user_cache_dir() -> Path:
    """PyCLNF's per-user cache folder (exports, backend choice).

    Returns
    -------
    pathlib.Path
        ``$PYCLNF_CACHE_DIR`` (``~`` expanded) if set and not blank, else
        ``platformdirs.user_cache_dir("pyclnf")`` (``~/.cache/pyclnf`` on
        Linux, ``~/Library/Caches/pyclnf`` on macOS,
        ``%LOCALAPPDATA%\\pyclnf\\Cache`` on Windows). Not created.
    """
    override = os.environ.get(CACHE_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir(_APP_NAME, appauthor=False))


def default_model_dir() -> Path:
    """The model folder used when no ``model_dir`` is given.

    Returns
    -------
    pathlib.Path
        ``$PYCLNF_MODEL_DIR`` (with ``~`` expanded) if that variable is set and
        not empty, else :func:`user_data_dir`. The folder may not exist.
    """
    env = os.environ.get(MODEL_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return user_data_dir()


def _check_path_arg(value, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    return Path(value).expanduser()


def _candidates(folder: Path):
    """The folder itself, then the model folder of an OpenFace source tree
    rooted there, then the ``model/`` folder of an OpenFace binary install."""
    return (folder, folder / SOURCE_TREE_PREFIX, folder / "model")


def openface_model_folder(folder: PathLike) -> Path:
    """The model folder inside an OpenFace layout.

    Parameters
    ----------
    folder : str or os.PathLike
        A model folder, the root of an OpenFace source tree (holding
        ``lib/local/LandmarkDetector/model``) or of an OpenFace binary install
        (holding ``model/``).

    Returns
    -------
    pathlib.Path
        The first of ``folder``, ``folder/lib/local/LandmarkDetector/model``
        and ``folder/model`` that holds ``main_clnf_general.txt`` or
        ``main_ceclm_general.txt``; ``folder`` itself if none does.
    """
    folder = _check_path_arg(folder, "folder")
    for cand in _candidates(folder):
        if any((cand / m).is_file() for m in _MARKERS):
            return cand
    return folder


def _normalise_required(required) -> tuple:
    if isinstance(required, (str, os.PathLike)):
        required = (required,)
    try:
        names = tuple(os.fspath(r) for r in required)
    except TypeError:
        raise TypeError(
            f"required must be a str or an iterable of str, got {type(required).__name__}"
        ) from None
    if not names:
        raise ValueError("required must name at least one file, got an empty sequence")
    return names


def find_model_dir(model_dir: Optional[PathLike] = None,
                   required: Iterable[str] = ("main_ceclm_general.txt",)) -> Path:
    """Locate an installed OpenFace model folder.

    Parameters
    ----------
    model_dir : str or os.PathLike, optional
        Folder to use; by default :func:`default_model_dir` (``PYCLNF_MODEL_DIR``
        or the per-user folder). The root of an OpenFace source tree or binary
        install is accepted too (see :func:`openface_model_folder`).
    required : str or iterable of str
        Paths, relative to the model folder, that must exist. Only existence
        is checked (a few ``stat`` calls); contents are checked by
        :func:`pyclnf.models.verify_models`.

    Returns
    -------
    pathlib.Path
        Absolute path of the model folder.

    Raises
    ------
    ModelNotFoundError
        If a required file is missing. The message names the folder searched,
        the missing files, the command ``pyclnf models install`` and the
        variable ``PYCLNF_MODEL_DIR``.
    TypeError
        If ``model_dir`` is not a path or ``required`` not strings.
    """
    names = _normalise_required(required)
    if model_dir is not None:
        folder = _check_path_arg(model_dir, "model_dir")
        origin = "the model_dir argument"
    elif os.environ.get(MODEL_DIR_ENV, "").strip():
        folder = default_model_dir()
        origin = f"${MODEL_DIR_ENV}"
    else:
        folder = default_model_dir()
        origin = "the per-user default"
    for cand in _candidates(folder):
        if all((cand / n).is_file() for n in names):
            return Path(os.path.abspath(cand))
    missing = [n for n in names if not (folder / n).is_file()]
    raise ModelNotFoundError(
        f"OpenFace {OPENFACE_VERSION} model files not found in {folder} (from {origin}); "
        f"missing: {', '.join(missing)}. Install them with `{INSTALL_COMMAND}` "
        f"(add `--from DIR` to copy them from an existing OpenFace install), "
        f"or set {MODEL_DIR_ENV} to a folder that holds OpenFace's model files "
        f"(main_clnf_general.txt, main_ceclm_general.txt, patch_experts/ ...)."
    )
