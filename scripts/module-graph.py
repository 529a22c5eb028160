#!/usr/bin/env python3
"""The module graph of docs/architecture.md, derived from Package.swift.

  scripts/module-graph.py            print the Mermaid block
  scripts/module-graph.py --write    rewrite the block in docs/architecture.md
  scripts/module-graph.py --check    exit 1 when docs/architecture.md's block differs (CI runs this)

Only our own library and executable targets appear (tests and external packages do not), with an
edge for each dependency on another of our targets, and no edge that another path already implies
(a transitive reduction), so the picture shows layers rather than a web.
"""
import json, os, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "architecture.md")
BEGIN, END = "<!-- module-graph:begin (scripts/module-graph.py --write) -->", "<!-- module-graph:end -->"
# Modules with no I/O: they take time as a parameter and are tested with a manual clock.
PURE = {"HostnatAddressing", "HostnatPackets", "HostnatEngine", "HostnatPlanner", "HostnatInternet",
        "HostnatWorkload", "HostnatDesiredState", "HostnatControlRules"}


def targets():
    # A scratch folder of its own: dump-package only evaluates the manifest, and so need not wait for
    # the lock of a build or test run in .build.
    with tempfile.TemporaryDirectory() as scratch:
        out = subprocess.run(["swift", "package", "--scratch-path", scratch, "dump-package"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    package = json.loads(out)
    ours = {t["name"]: t for t in package["targets"] if t["type"] in ("regular", "executable")
            and not t.get("path", "").startswith("Tests/")}
    graph = {}
    for name, t in ours.items():
        deps = set()
        for d in t["dependencies"]:
            key = next(iter(d))
            dep = d[key][0]
            if dep in ours:
                deps.add(dep)
        graph[name] = deps
    return graph


# Layering rules the graph must keep (checked with --check): the controller never links the data
# plane, and a pure module reaches only pure modules (the generated protocol types aside).
FORBIDDEN = {"HostnatController": {"HostnatDataplane", "HostnatEngine", "HostnatNetns", "HostnatAgent"}}
PURE_MAY_USE = PURE | {"HostnatProto"}


def closure(graph, start, skip_edge=None):
    """Every module `start` reaches, optionally without its direct edge to `skip_edge`."""
    seen, stack = set(), [d for d in graph[start] if d != skip_edge]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(graph[n])
    return seen


def violations(graph):
    found = []
    for name, banned in FORBIDDEN.items():
        for dep in sorted(closure(graph, name) & banned):
            found.append(f"{name} reaches {dep}")
    for name in sorted(PURE & graph.keys()):
        for dep in sorted(closure(graph, name) - PURE_MAY_USE):
            found.append(f"pure module {name} reaches {dep}")
    return found


def reduce(graph):
    # An edge is implied when the target is still reached without it.
    return {n: {d for d in deps if d not in closure(graph, n, skip_edge=d)} for n, deps in graph.items()}


def mermaid(graph):
    lines = ["```mermaid", "graph BT"]
    for name in sorted(graph):
        label = name + (" (pure)" if name in PURE else "")
        lines.append(f"  {name}[\"{label}\"]")
    for name in sorted(graph):
        for dep in sorted(graph[name]):
            lines.append(f"  {name} --> {dep}")
    lines.append("```")
    return "\n".join(lines)


def main():
    graph = targets()
    block = mermaid(reduce(graph))
    if len(sys.argv) == 1:
        print(block)
        return 0
    doc = open(DOC).read()
    if BEGIN not in doc or END not in doc:
        print(f"{DOC}: no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = doc.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    if sys.argv[1] == "--write":
        open(DOC, "w").write(head + BEGIN + "\n" + block + "\n" + END + tail)
        return 0
    if sys.argv[1] == "--check":
        broken = violations(graph)
        for line in broken:
            print(f"layering: {line}", file=sys.stderr)
        if broken:
            return 1
        if current.strip() != block.strip():
            print("docs/architecture.md's module graph differs from Package.swift; run scripts/module-graph.py --write",
                  file=sys.stderr)
            print(block, file=sys.stderr)
            return 1
        print("module graph in docs/architecture.md matches Package.swift")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
