"""The package's architecture, checked from the source (issue 10).

Every ``import`` in ``pyclnf/`` (module level and inside functions) is read
with :mod:`ast` and mapped to the layer of the part it imports from
(``docs/architecture.md`` draws the layers). Checked:

- no part imports from a higher layer;
- the parts import each other without a cycle (parts of one layer may import
  each other, one way only);
- no part imports another part's private module or private name
  (``pyclnf.backends._kernels`` from outside ``pyclnf.backends``); the root
  package's own private modules (``pyclnf._threads``...) are shared by all;
- no function outside the Numba kernels is longer than 60 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyclnf"

#: part (first component below ``pyclnf``) -> layer, low to high
LAYERS = {
    # 0: no imports from the rest of the package
    "errors": 0, "_version": 0, "_numba_cache": 0, "_threads": 0, "_fixed_order": 0, "image": 0,
    # 1: OpenFace's file formats, the model store, the fit settings (plain data)
    "formats": 1, "models": 1, "config": 1,
    # 2: the shape model, the patch experts, test/benchmark support
    "shape": 2, "patch_experts": 2, "testing": 2,
    # 3: export of patch experts to ONNX/CoreML; 4: the backends (may use export)
    "export": 3,
    "backends": 4,
    # 5: the optimiser; detection and validation
    "fitting": 5, "detection": 5,
    # 6: the public API and what it drives
    "tracking": 6, "clnf": 6, "_warmup": 6, "video": 6, "output": 6,
    # 7: many files at once, the command line, the package root
    "batch": 7, "cli": 7, "__main__": 7, "": 7,
}

#: script entry points kept at their documented paths (``python
#: pyclnf/backends/export_to_onnx.py``); they only forward to ``pyclnf.cli.export``
#: and nothing in the package imports them
ENTRY_POINTS = {"pyclnf.backends.export_to_onnx", "pyclnf.backends.export_to_coreml"}

#: decorators that make a function a Numba kernel (exempt from the length rule)
KERNEL_DECORATORS = {"njit", "jit", "vectorize", "guvectorize", "stencil"}
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return sorted((_module_name(p), p) for p in PACKAGE.rglob("*.py"))


def _imports(name: str, path: Path):
    """(target module, imported names, line) of each import of ``pyclnf``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pyclnf":
                    yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "pyclnf":
                yield target, tuple(a.name for a in node.names), node.lineno
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                "import_module" and node.args and isinstance(node.args[0], ast.Constant) and \
                str(node.args[0].value).split(".")[0] == "pyclnf":
            yield node.args[0].value, (), node.lineno          # importlib.import_module("pyclnf....")


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges():
    """(importer, target module, names, line) of every internal import; a
    ``from pyclnf.x import y`` of a submodule ``y`` is an import of ``pyclnf.x.y``;
    the imports of the :data:`ENTRY_POINTS` scripts are left out."""
    known = {name for name, _ in _modules()}
    for name, path in _modules():
        if name in ENTRY_POINTS:
            continue
        for target, names, line in _imports(name, path):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if subs and len(subs) == len(names):
                for sub in subs:
                    yield name, sub, (), line
            else:
                yield name, target, names, line


def test_every_part_has_a_layer():
    missing = sorted({_part(name) for name, _ in _modules()} - set(LAYERS))
    assert not missing, f"parts of pyclnf without a layer in LAYERS: {missing}"


def test_no_upward_import():
    offenders = [
        f"{src}:{line} imports {dst} (layer {LAYERS[_part(src)]} -> {LAYERS[_part(dst)]})"
        for src, dst, _, line in _edges()
        if _part(src) in LAYERS and _part(dst) in LAYERS and LAYERS[_part(dst)] > LAYERS[_part(src)]
    ]
    assert not offenders, "imports from a higher layer:\n" + "\n".join(offenders)


def test_no_cycle_between_parts():
    graph = {}
    for src, dst, _, _ in _edges():
        if _part(src) != _part(dst):
            graph.setdefault(_part(src), set()).add(_part(dst))

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    cycles = sorted(f"{a} -> {b} -> ... -> {a}" for a in graph for b in graph[a] if reaches(b, a, {b}))
    assert not cycles, "import cycles between parts of pyclnf:\n" + "\n".join(cycles)


def test_nothing_imports_the_entry_points():
    users = [f"{src}:{line}" for src, dst, _, line in _edges() if dst in ENTRY_POINTS]
    assert not users, "modules importing the script entry points:\n" + "\n".join(users)


def _private(parts) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in parts)


def test_no_private_import_across_parts():
    offenders = []
    for src, dst, names, line in _edges():
        if _part(src) == _part(dst) or not _part(dst):
            continue
        inner = dst.split(".")[2:]                  # below the part's own name
        if _private(inner) or _private(names) or (_private([_part(dst)]) and inner):
            offenders.append(f"{src}:{line} imports {dst} {', '.join(names)}".rstrip())
    assert not offenders, "private imports across parts (make the name public in its home module):\n" + \
        "\n".join(offenders)


def _is_kernel(node) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in KERNEL_DECORATORS:
            return True
    return False


def _function_lengths():
    """(lines, where) of every function that is not a Numba kernel: from the
    ``def`` line to its last line, its docstring not counted."""
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_kernel(node):
                lines = node.end_lineno - node.lineno + 1
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                          ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    lines -= body[0].end_lineno - body[0].lineno + 1
                yield lines, f"{name}.{node.name} (line {node.lineno}): {lines} lines"


def _fake_package(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        f = root / "pyclnf" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")
    return root / "pyclnf"


def test_checks_report_their_offenders(tmp_path, monkeypatch):
    """Each check fails on a package that breaks its rule, naming the line."""
    monkeypatch.setattr(__import__(__name__), "PACKAGE", _fake_package(tmp_path, {
        "__init__.py": "",
        "formats/__init__.py": "",
        "formats/binary.py": "def f():\n    from ..cli import main\n",          # upward, in a function
        "cli/__init__.py": "from ..formats import binary\nmain = 1\n",
        "shape/__init__.py": "from ..patch_experts import x\n",
        "patch_experts.py": "from pyclnf.shape import y\nfrom .backends._kernels import k\n",
        "backends/__init__.py": "",
        "backends/_kernels.py": "k = 1\n",
        "detection/__init__.py": "import importlib\nimportlib.import_module('pyclnf.cli')\n",  # by name
    }))
    with pytest.raises(AssertionError, match=r"pyclnf\.formats\.binary:2 imports pyclnf\.cli \(layer 1 -> 7\)"):
        test_no_upward_import()
    with pytest.raises(AssertionError, match=r"pyclnf\.detection:2 imports pyclnf\.cli \(layer 5 -> 7\)"):
        test_no_upward_import()
    with pytest.raises(AssertionError, match=r"patch_experts -> shape -> \.\.\. -> patch_experts"):
        test_no_cycle_between_parts()
    with pytest.raises(AssertionError, match=r"pyclnf\.patch_experts:2 imports pyclnf\.backends\._kernels k"):
        test_no_private_import_across_parts()


def test_longest_function_outside_kernels():
    too_long = sorted((n, where) for n, where in _function_lengths() if n > MAX_FUNCTION_LINES)
    assert not too_long, f"functions longer than {MAX_FUNCTION_LINES} lines (docstring not counted):\n" + \
        "\n".join(where for _, where in reversed(too_long))
