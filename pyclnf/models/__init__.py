"""OpenFace's model files: where they live, how to install and verify them.

PyCLNF does not ship OpenFace's model files (their licence forbids
redistribution). They are installed once per user, after the user accepts
OpenFace's licence, with ``pyclnf models install`` or :func:`ensure_models`,
and found again with :func:`find_model_dir`.

The model folder is the ``model_dir`` argument, else ``$PYCLNF_MODEL_DIR``,
else a per-user data folder (see :mod:`pyclnf.models.locate`).

Importing this package touches neither the network nor the disk.
"""

from ._hashing import file_sha256
from .install import InstallFailure, InstallResult, ensure_models, install_models
from .license import ACCEPT_LICENSE_ENV, LICENSE_URL, LicenseNotAcceptedError
from .locate import MODEL_DIR_ENV, default_model_dir, find_model_dir
from .manifest import Manifest, ModelFile, manifest_from_dir, release_manifest
from .verify import FileStatus, VerifyReport, verify_models

__all__ = [
    "MODEL_DIR_ENV",
    "ACCEPT_LICENSE_ENV",
    "LICENSE_URL",
    "default_model_dir",
    "find_model_dir",
    "ensure_models",
    "install_models",
    "verify_models",
    "release_manifest",
    "manifest_from_dir",
    "Manifest",
    "ModelFile",
    "InstallResult",
    "InstallFailure",
    "VerifyReport",
    "FileStatus",
    "LicenseNotAcceptedError",
    "file_sha256",
]
