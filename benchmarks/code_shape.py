"""Code shape of the project: the numbers issue 13 asks for before and after a refactor.

    python benchmarks/code_shape.py            # markdown table on stdout
    python benchmarks/code_shape.py --json     # the same numbers as JSON

File sizes (lines), the longest functions, imports written inside functions (the project's own
modules and others), import cycles among the project's modules (imports at module level only,
the ones that run at import time), and lines over 120 characters. Test counts per tier come from
`python -m pytest --collect-only -q -m ...` (see README); this script does not run pytest.
"""

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("tsnet_hf", "training", "space", "benchmarks", "tests")
PRODUCT = ("app.py", "tsnet_hf", "training", "space")  # what users run; tests and benchmarks counted apart
PACKAGES = ("tsnet_hf", "training")


def python_files(root: Path) -> list[Path]:
    """The project's .py files: the folders above and app.py."""
    files = [root / "app.py"] if (root / "app.py").exists() else []
    for folder in FOLDERS:
        files += sorted((root / folder).rglob("*.py"))
    return [f for f in files if ".venv" not in f.parts]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def definitions(tree: ast.AST):
    """(qualified name, line count, is_class) of every function, method and class."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                found.append((name, child.end_lineno - child.lineno + 1, isinstance(child, ast.ClassDef)))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def imported_modules(node, module: str, is_package: bool) -> list[str]:
    """Absolute names a Import/ImportFrom node brings in (relative ones resolved against `module`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(max(node.level - 1, 0)):
        base = base.rpartition(".")[0]
    if node.level:
        target = f"{base}.{node.module}" if node.module and base else node.module or base
    else:
        target = node.module or ""
    names = [f"{target}.{alias.name}" if target else alias.name for alias in node.names]
    return names if node.level and not node.module else [target, *names]  # `from . import x`: x only


def own(name: str, modules: set) -> str | None:
    """The project module `name` refers to (itself or its nearest parent in `modules`), or None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def cycles(graph: dict) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def connect(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in graph:
        if node not in index:
            connect(node)
    return out


def measure(root: Path) -> dict:
    files = python_files(root)
    modules = {module_name(f, root) for f in files if f.parts[len(root.parts)] in PACKAGES}
    sizes, longest, classes, long_lines = {}, [], [], 0
    inline = {"product": [0, 0], "tests and benchmarks": [0, 0]}  # [the project's own modules, other packages]
    graph, graph_all = {}, {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(root))
        sizes[rel] = text.count("\n")
        long_lines += sum(len(line) > 120 for line in text.splitlines())
        tree = ast.parse(text)
        for name, lines, is_class in definitions(tree):
            (classes if is_class else longest).append((f"{rel}:{name}", lines))
        module = module_name(path, root)
        is_package = path.name == "__init__.py"
        edges = graph.setdefault(module, set()) if module in modules else None
        edges_all = graph_all.setdefault(module, set()) if module in modules else None
        counts = inline["product" if path.relative_to(root).parts[0] in PRODUCT else "tests and benchmarks"]
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = {own(name, modules) for name in imported_modules(node, module, is_package)} - {None, module}
            in_function = id(node) not in top_level and not _guarded_top(tree, node)
            if in_function:
                counts[0 if targets else 1] += 1
            elif edges is not None:
                edges |= targets
            if edges_all is not None:
                edges_all |= targets
    longest.sort(key=lambda item: -item[1])
    classes.sort(key=lambda item: -item[1])
    return {
        "files": len(files),
        "lines": sum(sizes.values()),
        "largest_files": sorted(sizes.items(), key=lambda i: -i[1])[:10],
        "longest_functions": longest[:10],
        "functions_over_60_lines": sum(n > 60 for _, n in longest),
        "largest_classes": classes[:5],
        "inline_imports": inline,
        "import_cycles": cycles(graph),
        "import_cycles_with_function_imports": cycles(graph_all),
        "lines_over_120": long_lines,
    }


def _guarded_top(tree: ast.Module, target) -> bool:
    """An import inside a module-level `try`/`if` still runs at import time."""
    for node in tree.body:
        if isinstance(node, (ast.Try, ast.If)) and any(child is target for child in ast.walk(node)):
            return True
    return False


def markdown(shape: dict) -> str:
    rows = [
        f"- Python files: {shape['files']}, lines: {shape['lines']}",
        f"- Functions over 60 lines: {shape['functions_over_60_lines']}",
        *(
            f"- Imports inside functions ({where}): {own_count} of the project's modules, {other} of other packages"
            for where, (own_count, other) in shape["inline_imports"].items()
        ),
        f"- Import cycles at module level: {shape['import_cycles'] or 'none'}; counting imports inside "
        f"functions too: {shape['import_cycles_with_function_imports'] or 'none'}",
        f"- Lines over 120 characters: {shape['lines_over_120']}",
        "- Largest files: " + ", ".join(f"{name} {lines}" for name, lines in shape["largest_files"]),
        "- Longest functions: " + ", ".join(f"{name} {lines}" for name, lines in shape["longest_functions"]),
        "- Largest classes: " + ", ".join(f"{name} {lines}" for name, lines in shape["largest_classes"]),
    ]
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="project folder (default: this one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    if not (args.root / "tsnet_hf").is_dir():
        parser.error(f"{args.root} is not a tsnet-hf checkout (it has no tsnet_hf folder).")
    shape = measure(args.root.resolve())
    print(json.dumps(shape, indent=1) if args.json else markdown(shape))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
