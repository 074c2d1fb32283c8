#!/usr/bin/env python3
"""include_graph.py: prints the include graph of include/gsq and fails on an include that points up.

A developer tool (python3, no dependencies), run from anywhere:  python3 scripts/include_graph.py
Options: --quiet prints only the room-to-room summary and the verdict.

The rooms, in reading order (STYLE.md, "Layout"); a header may include headers of its own room and
of the rooms before it, never of a room after it:
    format -> tensor -> convert -> matmul -> nn -> optim -> models
Leaf rooms (detail/, kernels/, io/) may be included from any room; they include only leaf rooms and
format/tensor.  gsq.hpp, the umbrella, sits with optim: core + nn + optim, and its closure must hold
no model header, no Eigen, no file I/O (io/file.hpp, <fstream>).  Forwarding headers at old paths
(their first line says "deprecated since") may include anything, but nothing in the repository may
include them.  Exit status 1 on any violation.
"""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
INCLUDE = os.path.join(ROOT, "include")

# Room of a header (path relative to include/gsq), by the first matching prefix.
ROOMS = [
    ("format", ["format.hpp", "half.hpp", "version.hpp", "thread_pool.hpp"]),
    ("tensor", ["tensor.hpp", "packed.hpp"]),
    ("convert", ["convert.hpp", "regroup.hpp", "baselines/", "eigen.hpp"]),
    ("matmul", ["matmul.hpp", "matmul/"]),
    ("nn", ["nn/"]),
    ("optim", ["optim.hpp", "optim/", "gsq.hpp"]),
    ("models", ["models/"]),
]
LEAVES = [("detail", "detail/"), ("kernels", "kernels/"), ("io", "io/")]
LEAF_REACH = 1  # leaves may include rooms up to this index (tensor)
RANK = {name: i for i, (name, _) in enumerate(ROOMS)}
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
# Blocks a user opts into with a macro (detail/gemm_f32.hpp's Eigen GEMM under
# GSQ_FLOAT_GEMM_EIGEN): their includes are the user's choice, not the header's.
OPT_IN_RE = re.compile(r'^\s*#\s*if\s+defined\(GSQ_FLOAT_GEMM_EIGEN\)\s*$.*?^\s*#\s*endif', re.M | re.S)
UMBRELLA_FORBIDDEN = [r"^models/", r"^eigen\.hpp$", r"^io/file\.hpp$", r"^io/checkpoint_file\.hpp$",
                      r"^<fstream>$", r"^<Eigen/"]


def room_of(rel):
    for name, prefix in LEAVES:
        if rel.startswith(prefix):
            return name
    for name, prefixes in ROOMS:
        if any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in prefixes):
            return name
    return None


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def headers():
    out = {}
    base = os.path.join(INCLUDE, "gsq")
    for dirpath, _, files in os.walk(base):
        for f in files:
            if f.endswith(".hpp"):
                path = os.path.join(dirpath, f)
                out[os.path.relpath(path, base).replace(os.sep, "/")] = read(path)
    return out


def main(argv):
    quiet = "--quiet" in argv
    hdrs = headers()
    deprecated = {h for h, text in hdrs.items() if "deprecated since" in text.split("\n", 1)[0]}
    graph, std = {}, {}
    for h, text in hdrs.items():
        incs = INCLUDE_RE.findall(OPT_IN_RE.sub("", text))
        graph[h] = sorted(i[len("gsq/"):] for i in incs if i.startswith("gsq/"))
        std[h] = sorted("<" + i + ">" for i in incs if not i.startswith("gsq/"))
    errors = []

    for h in sorted(hdrs):
        if h in deprecated:
            continue
        src = room_of(h)
        if src is None:
            errors.append(f"{h}: in no room (add it to ROOMS or LEAVES)")
            continue
        for dep in graph[h]:
            if dep not in hdrs:
                errors.append(f"{h} includes gsq/{dep}, which does not exist")
                continue
            if dep in deprecated:
                errors.append(f"{h} includes the deprecated forwarding header gsq/{dep}")
                continue
            dst = room_of(dep)
            if dst is None:
                continue  # reported above
            if src in dict(LEAVES):
                if dst not in dict(LEAVES) and RANK[dst] > LEAF_REACH:
                    errors.append(f"upward: leaf {h} ({src}) includes gsq/{dep} ({dst})")
            elif dst not in dict(LEAVES) and RANK[dst] > RANK[src]:
                errors.append(f"upward: {h} ({src}) includes gsq/{dep} ({dst})")

    # The umbrella's closure.
    seen, todo = set(), ["gsq.hpp"]
    while todo:
        h = todo.pop()
        if h in seen or h not in hdrs:
            continue
        seen.add(h)
        todo.extend(graph[h])
    closure = sorted(seen) + sorted({s for h in seen for s in std[h]})
    for item in closure:
        for pattern in UMBRELLA_FORBIDDEN:
            if re.search(pattern, item):
                errors.append(f"gsq.hpp pulls in {item}, which the umbrella must not")

    # Nothing in the repository uses a forwarding header.
    for top in ["include", "tests", "examples", "bench", "tools", "scripts", "docs", "README.md"]:
        path = os.path.join(ROOT, top)
        files = [path] if os.path.isfile(path) else [
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
            if f.endswith((".hpp", ".cpp", ".h", ".md"))] if os.path.isdir(path) else []
        for f in files:
            for inc in INCLUDE_RE.findall(read(f)):
                if inc.startswith("gsq/") and inc[len("gsq/"):] in deprecated and not (
                        f.startswith(INCLUDE) and os.path.relpath(f, os.path.join(INCLUDE, "gsq"))
                        .replace(os.sep, "/") in deprecated):
                    errors.append(f"{os.path.relpath(f, ROOT)} includes the deprecated gsq/{inc[4:]}")

    # Output: every header with its gsq includes, room by room, then room-to-room edges.
    order = [name for name, _ in ROOMS] + [name for name, _ in LEAVES]
    if not quiet:
        for room in order:
            members = sorted(h for h in hdrs if h not in deprecated and room_of(h) == room)
            if not members:
                continue
            print(f"[{room}]")
            for h in members:
                deps = ", ".join(graph[h]) if graph[h] else "-"
                print(f"  {h:28} -> {deps}")
        print("[deprecated forwarding headers]")
        for h in sorted(deprecated):
            print(f"  {h:28} -> {', '.join(graph[h])}")
    edges = {}
    for h in hdrs:
        if h in deprecated or room_of(h) is None:
            continue
        for dep in graph[h]:
            if dep in hdrs and dep not in deprecated and room_of(dep) and room_of(dep) != room_of(h):
                edges[(room_of(h), room_of(dep))] = edges.get((room_of(h), room_of(dep)), 0) + 1
    print("rooms (from -> to: includes):")
    for (a, b), n in sorted(edges.items(), key=lambda e: (order.index(e[0][0]), order.index(e[0][1]))):
        print(f"  {a:8} -> {b:8} {n}")
    print(f"gsq.hpp pulls in {len(seen)} gsq headers; std headers: {' '.join(sorted({s for h in seen for s in std[h]}))}")
    if errors:
        for e in errors:
            print("ERROR: " + e, file=sys.stderr)
        print(f"include_graph: {len(errors)} violation(s)", file=sys.stderr)
        return 1
    print(f"include_graph: OK, {len(hdrs) - len(deprecated)} headers, no upward include, "
          f"{len(deprecated)} forwarding headers unused")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
