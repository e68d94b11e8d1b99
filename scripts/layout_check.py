#!/usr/bin/env python3
"""Checks the layout rules of src/: no file over MAX_LINES lines, and no import circle
between files.

Each `use` path and each qualified path in code (comments and test modules excluded) is resolved to the
file that defines it; a path that lands on a module's front door (its mod.rs) and names
something that file only re-exports (`pub use child::Name`) is followed to the child that
defines it. A circle is a set of files that reach each other through those edges.
Exit status 1 when a rule is broken, with what broke it.
"""

import glob
import re
import sys

MAX_LINES = 600
SRC = "src"


def module_of(path):
    parts = path[len(SRC) + 1 : -3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


FILES = [f for f in glob.glob(f"{SRC}/**/*.rs", recursive=True) if not f.endswith("main.rs")]
MODULES = {module_of(f): f for f in FILES}
TESTS = re.compile(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", re.S)
COMMENT = re.compile(r"//[^\n]*")
PATH = re.compile(r"(?<![:\w])(\w+(?:::\w+)*)(?:::\{([^;]*?)\}|(?=::\w))?")
REEXPORT = re.compile(r"pub(?:\([a-z]+\))? use ([\w:]+?)(?:::\{([^;]*?)\})?;", re.S)


def resolve(module, path):
    """The file defining `path` as written in `module`, or None outside the crate."""
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    elif parts[0] == "super":
        base = list(module)
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    elif parts[0] == "self":
        base, parts = list(module), parts[1:]
    elif module + (parts[0],) in MODULES:
        base = list(module)
    else:
        return None
    full = base + parts
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in MODULES:
            return MODULES[tuple(full[:k])]
    return None


def reexports():
    """(file, name) → the path it re-exports."""
    found = {}
    for f in FILES:
        for m in REEXPORT.finditer(open(f).read()):
            base, group = m.group(1), m.group(2)
            if group is None:
                names, base = [base.split("::")[-1]], "::".join(base.split("::")[:-1])
            else:
                names = [n.strip().split(" as ")[0] for n in group.split(",")]
            for name in filter(None, names):
                found[(f, name.split("::")[-1])] = f"{base}::{name}"
    return found


def edges():
    followed = reexports()
    graph = {}
    for f in FILES:
        module = module_of(f)
        text = COMMENT.sub("", TESTS.sub("", open(f).read()))
        deps = set()
        for m in PATH.finditer(text):
            base, group = m.group(1), m.group(2)
            if group is None and "::" not in base:
                continue
            paths = [base] if group is None else [
                f"{base}::{item.strip().split(' as ')[0].split('::{')[0]}"
                for item in group.split(",")
                if item.strip() and item.strip() != "self"
            ]
            for path in paths:
                target, at = resolve(module, path), path
                for _ in range(5):
                    name = at.split("::")[-1]
                    if target is None or (target, name) not in followed:
                        break
                    at = followed[(target, name)]
                    further = resolve(module_of(target), at)
                    if further in (None, target):
                        break
                    target = further
                if target and target != f:
                    deps.add(target)
        graph[f] = deps
    return graph


def circles(graph):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    broken = False
    for f in sorted(FILES):
        lines = sum(1 for _ in open(f))
        if lines > MAX_LINES:
            print(f"{f}: {lines} lines (at most {MAX_LINES})")
            broken = True
    for component in circles(edges()):
        print("import circle: " + " ↔ ".join(component))
        broken = True
    if not broken:
        print(f"layout: {len(FILES)} files, none over {MAX_LINES} lines, no import circle")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
