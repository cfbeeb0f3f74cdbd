"""Imports only point down the layers of DESIGN.md §2; the sans-I/O cores import no I/O frameworks."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "rtsep"
CLIENT_ROOT = ROOT.parent / "clients" / "python"  # rtsep_protocol (the wire format) and rtsep_client

# highest first; a module may import modules of its own layer or any lower one
LAYERS = [
    {"rtsep.__main__", "rtsep.cli", "rtsep.server", "rtsep.config", "rtsep.demo", "rtsep.compose", "rtsep.offline",
     "rtsep.evaluate"},
    {"rtsep.transport"},
    {"rtsep.sessions"},
    {"rtsep.driver", "rtsep.pipeline"},
    {"rtsep.store"},
    {"rtsep.runtime"},
    {"rtsep.enhance"},
    {"rtsep.separate"},
    {"rtsep.diarize"},
    {"rtsep.stream"},
    {"rtsep.protocol"},
    {"rtsep.audio", "rtsep.specs", "rtsep.errors", "rtsep.metrics", "rtsep"},
]


def layer_of(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if module == name or module.startswith(name + "."):
                if best is None or len(name) > best[1]:
                    best = (i, len(name))
    assert best is not None, f"{module} is in no layer"
    return best[0]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(root: Path = ROOT):
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def test_imports_point_down():
    violations = []
    for module, path in modules():
        mine = layer_of(module)
        for imported in imports(path):
            if (imported == "rtsep" or imported.startswith("rtsep.")) and layer_of(imported) < mine:
                violations.append(f"{module} imports {imported}")
    assert not violations, violations


def test_sans_io_cores():
    for module, path in [*modules(), *modules(CLIENT_ROOT / "rtsep_protocol")]:
        if module.startswith(("rtsep.stream", "rtsep.protocol", "rtsep_protocol")):
            banned = {i for i in imports(path) if i.split(".")[0] in {"asyncio", "torch", "socket", "websockets",
                                                                        "fastapi", "starlette", "aiortc"}}
            assert not banned, f"{module} imports {banned}"


def test_the_client_and_its_protocol_import_nothing_of_the_server():
    """clients/python installs alone (numpy, websockets): it must not reach into rtsep (torch, models)."""
    for package in ("rtsep_protocol", "rtsep_client"):
        for module, path in modules(CLIENT_ROOT / package):
            server = {i for i in imports(path) if i.split(".")[0] == "rtsep"}
            assert not server, f"{module} imports {server}"
        assert any(True for _ in modules(CLIENT_ROOT / package)), package


def test_sans_io_cores_load_no_io_framework_even_indirectly():
    """Importing the session machines (input and output) pulls in no I/O framework and no upper layer."""
    import subprocess
    import sys

    code = ("import sys, rtsep.stream.core, rtsep.stream.session, rtsep.stream.adaptation, rtsep.protocol.frames;"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {'asyncio', 'torch', 'websockets', "
            "'starlette', 'fastapi', 'aiortc'} or m.startswith(('rtsep.diarize', 'rtsep.separate', 'rtsep.runtime', "
            "'rtsep.store', 'rtsep.transport')))))")
    env = {"PYTHONPATH": f"{ROOT.parent}:{CLIENT_ROOT}"}  # rtsep.protocol re-exports clients/python's rtsep_protocol
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == ""
