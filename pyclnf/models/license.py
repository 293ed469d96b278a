"""OpenFace's licence terms and the user's consent to them.

PyCLNF's code is BSD-licensed, but the OpenFace model files it runs are not
part of PyCLNF: they come under OpenFace's own licence (academic and
non-commercial research use; no redistribution). PyCLNF installs them only
after the user has seen a summary of those terms and accepted them, by one of

- ``accept_license=True`` (``pyclnf models install --accept-license``);
- the environment variable ``PYCLNF_ACCEPT_OPENFACE_LICENSE=1``;
- answering ``y`` to the question asked in an interactive terminal.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Optional, TextIO

from ..errors import PyclnfError

__all__ = [
    "LICENSE_URL",
    "LICENSE_SUMMARY",
    "ACCEPT_LICENSE_ENV",
    "LicenseNotAcceptedError",
    "license_accepted_by_env",
    "obtain_consent",
]

#: OpenFace's licence, at the release whose files PyCLNF installs.
LICENSE_URL = "https://github.com/TadasBaltrusaitis/OpenFace/blob/OpenFace_2.2.0/OpenFace-license.txt"
#: Environment variable that, set to 1, accepts the licence without asking.
ACCEPT_LICENSE_ENV = "PYCLNF_ACCEPT_OPENFACE_LICENSE"

LICENSE_SUMMARY = f"""\
PyCLNF runs the model files of OpenFace 2.2.0 (Tadas Baltrusaitis et al.; copyright
Carnegie Mellon University and University of Cambridge). They are not part of
PyCLNF and come under OpenFace's own licence, which in short:
  - allows academic or non-profit organisation, non-commercial research use only;
  - forbids redistributing, selling or sharing the files;
  - asks publications arising from their use to cite OpenFace;
  - requires a separate licence from Carnegie Mellon University for commercial use.
By downloading or using the files you agree to the full terms: {LICENSE_URL}
Install the files only if your use is covered by these terms."""

_HOW_TO_ACCEPT = (
    f"pass accept_license=True, run `pyclnf models install --accept-license`, "
    f"or set {ACCEPT_LICENSE_ENV}=1"
)
_YES = ("1", "true", "yes", "y", "on")


class LicenseNotAcceptedError(PyclnfError, PermissionError):
    """OpenFace's licence was not accepted, so no model file was installed."""


def license_accepted_by_env(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``PYCLNF_ACCEPT_OPENFACE_LICENSE`` accepts the licence.

    Parameters
    ----------
    environ : mapping, optional
        Environment variables; ``os.environ`` by default.

    Returns
    -------
    bool
        True if the variable is ``1``, ``true``, ``yes``, ``y`` or ``on``
        (any case).
    """
    environ = os.environ if environ is None else environ
    return environ.get(ACCEPT_LICENSE_ENV, "").strip().lower() in _YES


def obtain_consent(accept_license: bool = False, *, stdin: Optional[TextIO] = None,
                   stderr: Optional[TextIO] = None) -> None:
    """Show OpenFace's licence summary and make sure the user accepts it.

    The summary is always written to ``stderr``. Consent comes from
    ``accept_license``, then from :data:`ACCEPT_LICENSE_ENV`, then, if
    ``stdin`` is an interactive terminal, from a ``[y/N]`` question.

    Parameters
    ----------
    accept_license : bool
        True if the caller has already accepted the terms.
    stdin, stderr : file-like, optional
        Streams for the question and the summary; ``sys.stdin`` and
        ``sys.stderr`` by default.

    Raises
    ------
    LicenseNotAcceptedError
        If the user declines, or no consent was given and ``stdin`` is not
        interactive. The message says how to consent.
    """
    stdin = sys.stdin if stdin is None else stdin
    stderr = sys.stderr if stderr is None else stderr
    print(LICENSE_SUMMARY, file=stderr)
    if accept_license:
        print("Licence accepted (accept_license=True).", file=stderr)
        return
    if license_accepted_by_env():
        print(f"Licence accepted ({ACCEPT_LICENSE_ENV} is set).", file=stderr)
        return
    interactive = stdin is not None and hasattr(stdin, "isatty") and stdin.isatty()
    if not interactive:
        raise LicenseNotAcceptedError(
            "OpenFace's licence must be accepted before its model files are installed, "
            f"and there is no terminal to ask in: read {LICENSE_URL}, then {_HOW_TO_ACCEPT}."
        )
    print("Do you accept OpenFace's licence terms? [y/N] ", end="", file=stderr, flush=True)
    answer = stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise LicenseNotAcceptedError(
            f"OpenFace's licence was not accepted (answer {answer!r}); nothing was installed. "
            f"To accept it later, {_HOW_TO_ACCEPT}."
        )
