"""The import rule of docs/concepts.md ("Layers"), enforced on the source: every import in
the package, inside functions too, runs to the same layer or a lower one, and the module
graph has no circle. Type-only imports (under ``if TYPE_CHECKING:``) are not imports.

Also: the ids the Numba kernels must hard-code (they cannot import the classes above them)
are the classes' own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "zipmodel"

# From the ground up; a module may import its own layer and the ones before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("kernels", ("_kernels",)),
    (
        "foundation",
        (
            "errors",
            "dtypes",
            "formats",
            "options",
            "threads",
            "_jit",
            "_checksum",
            "_io",
            "quality",
            "samples",
        ),
    ),
    ("codecs, stages, readers", ("codecs", "stages", "readers")),
    ("container", ("container",)),
    ("pipeline", ("pipeline", "summary")),
    (
        "folder, base models, loading, hub, export, batch",
        (
            "files",
            "zmfile",
            "folder",
            "basemodel",
            "loading",
            "hub",
            "gpu",
            "export",
            "batching",
            "batchplan",
            "batchworker",
        ),
    ),
    ("api", ("api", "warmup", "evaluate", "__init__")),
    ("cli", ("cli", "__main__")),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    for i, (_, names) in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    if hasattr(n, "lineno"):
                        lines.add(n.lineno)
    return lines


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported zipmodel module, line)`` for every import statement in the module."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("zipmodel")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("zipmodel"):
                target = node.module
            else:
                continue
            for a in node.names:  # ``from . import _jit`` names a module
                sub = f"{target}.{a.name}"
                out.append((sub if sub in known else target, node.lineno))
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module"):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("zipmodel"):
                out.append((str(arg.value), node.lineno))
    return [(m, ln) for m, ln in out if m != name]


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_every_import_runs_downward():
    upward = []
    for name, deps in graph().items():
        for dep, line in deps:
            if dep.split(".")[0] != "zipmodel" or dep == "zipmodel":
                continue  # the package itself (its lazy attributes) is the top face
            if layer_of(dep) > layer_of(name):
                upward.append(
                    f"{name}:{line} imports {dep} "
                    f"({LAYERS[layer_of(name)][0]} -> {LAYERS[layer_of(dep)][0]})"
                )
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    g = {n: sorted({d for d, _ in deps if d in modules()}) for n, deps in graph().items()}
    # a package imports its submodules and they import it back by name (``from . import x``):
    # the package __init__ -> child edge is how Python loads it, not a dependency to check
    for n, deps in g.items():
        g[n] = [d for d in deps if not d.startswith(n + ".")]
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in g.get(n, []):
            if state.get(d) == 1:
                circles.append(" -> ".join([*stack[stack.index(d) :], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


@pytest.mark.parametrize("kernel_name, cls_path", [
    ("_RAW", "zipmodel.codecs.raw:RawCodec"),
    ("_CONST", "zipmodel.codecs.const:ConstCodec"),
    ("_HUFFMAN", "zipmodel.codecs.huffman:HuffmanCodec"),
    ("_RANS", "zipmodel.codecs.rans:RansCodec"),
])  # fmt: skip
def test_kernel_codec_ids_are_the_classes(kernel_name, cls_path):
    """``_kernels/frame.py`` names codec ids as constants (the kernel layer imports nothing
    above it); they must be the registry's ids. Read from the source: no Numba import."""
    import importlib

    tree = ast.parse((PKG / "_kernels" / "frame.py").read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            names = [t.id for t in node.targets[0].elts]
            values = [v.value for v in node.value.elts]
            consts.update(zip(names, values))
    mod, cls = cls_path.split(":")
    assert consts[kernel_name] == getattr(importlib.import_module(mod), cls).codec_id


def test_kernel_transform_ids_are_the_classes():
    from zipmodel.stages import TRANSFORMS

    src = (PKG / "_kernels" / "frame.py").read_text()
    # decode_frame's transform switch: identity (0) and the float splits (1 bf16, 2 f16, 3 f32)
    assert "identity (0) and the float splits (1 bf16, 2 f16, 3 f32)" in src
    assert {t.dtype: i for i, t in TRANSFORMS.items()} == {None: 0, "BF16": 1, "F16": 2, "F32": 3}
