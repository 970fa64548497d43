"""The package's shape: its layers import only downwards, and its public names stay where users
find them (``import alexnet`` stays light until a name is used)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import alexnet

SRC = Path(alexnet.__file__).resolve().parent

# Lower layers first. A module may import from its own package and from the layers before its
# own; the applications (the top-level modules) may also use each other.
LAYERS = [
    {"errors"},  # the one error type, below everything
    {"files", "classes", "progress", "__init__"},  # what every layer shares
    {"models"},
    {"data"},
    {"training"},
    {"infer", "exporter", "caffe", "explain", "visualize", "bench", "serve", "reproduce", "options"},
    {"cli"},
    {"__main__"},
]
APPLICATIONS = 5  # the index of the applications in LAYERS


def _layer(unit: str) -> int:
    found = [i for i, names in enumerate(LAYERS) if unit in names]
    assert found, f"{unit} is in no layer: place it in LAYERS"
    return found[0]


def _unit(module: str) -> str:
    """The layer unit of ``alexnet.a.b``: its package or top-level module ``a``; a name that the
    package's ``__init__`` itself defines (``alexnet.__version__``) belongs to ``__init__``."""
    parts = module.split(".")
    if len(parts) > 1 and ((SRC / parts[1]).is_dir() or (SRC / f"{parts[1]}.py").is_file()):
        return parts[1]
    return "__init__"


def _imports(rel: Path, source: str) -> list[tuple[int, str]]:
    parts = list(rel.with_suffix("").parts)
    package = parts[:-1]  # a module's package; for an __init__, the package itself
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if node.module:
                out.append((node.lineno, ".".join(base + [node.module])))
            else:
                out += [(node.lineno, ".".join(base + [a.name])) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alexnet"):
            out.append((node.lineno, node.module))
    return out


def _violations(extra: dict[str, str] | None = None) -> list[str]:
    """Every import that goes upwards, in the package's files and in ``extra`` (path under the
    package -> source, checked as if it were there)."""
    sources = {path.relative_to(SRC): path.read_text() for path in sorted(SRC.rglob("*.py"))}
    sources.update({Path(k): v for k, v in (extra or {}).items()})
    bad = []
    for rel, source in sources.items():
        module = ".".join(Path(SRC.name, rel).with_suffix("").parts)
        own = _unit(module)
        for line, target in _imports(Path(SRC.name, rel), source):
            theirs = _unit(target)
            if theirs == own:
                continue
            mine, other = _layer(own), _layer(theirs)
            if other < mine or (other == mine == APPLICATIONS):
                continue
            bad.append(f"{rel}:{line} imports {target}")
    return bad


def test_every_module_imports_only_from_its_own_package_or_below():
    assert _violations() == []


def test_the_layer_check_catches_an_upward_import():
    """The check itself: a training module importing an application must be reported."""
    probe = {"training/_upward_probe.py": "from ..infer import predict\n"}
    assert _violations(probe) == ["training/_upward_probe.py:1 imports alexnet.infer"]


def test_import_alexnet_and_its_command_do_not_load_torch():
    """Nor does the command's module: cli.main sets PyTorch's huge-page switch, which PyTorch reads
    once, at its first allocation."""
    code = "import sys, alexnet, alexnet.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", sorted(set(alexnet.__all__) - {"__version__"}))
def test_every_public_name_resolves(name):
    assert getattr(alexnet, name) is not None
    assert name in dir(alexnet)


def test_export_stays_the_function_after_its_module_is_imported():
    import alexnet.exporter  # noqa: F401  (importing a submodule binds it on the package)

    assert callable(alexnet.export) and alexnet.export.__module__ == "alexnet.exporter"


def test_subpackages_are_attributes_of_the_package_as_before():
    code = "import alexnet; print(alexnet.models.create_model is alexnet.create_model, alexnet.infer.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "alexnet.infer"]


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        alexnet.nonesuch  # noqa: B018


# Modules whose tests live in another module's file: the file, and what in it tests the module.
# Every other module has a tests/**/test_<name>.py of its own.
TESTED_ELSEWHERE = {
    "errors": ("test_cli.py", "alexnet: error:"),  # the one-line error every command gives
    "graphs": ("test_gpu.py", "GraphedStep"),  # CUDA graphs: GPU tests only
    "registry": ("models/test_alexnet.py", "create_model"),  # for every variant
    "lenet": ("models/test_alexnet.py", "lenet5"),
    "ycc": ("data/test_augment_triton.py", "alexnet.data.ycc"),  # 4:2:0, with the fused augmentation
    "options": ("test_cli.py", "alexnet.options"),  # the applications' settings, through the commands
    "runner": ("reproduce/test_cifar.py", "run_study"),  # the study runner, through a study
    "figures": ("reproduce/test_cifar.py", "fig1.png"),  # the studies' figures
    "cifar_overfit": ("reproduce/test_cifar.py", "cifar_overfit"),
}
TESTS = Path(__file__).resolve().parent


def test_the_tests_of_a_module_are_found_by_its_name():
    modules = {p.stem for p in SRC.rglob("*.py") if p.stem not in ("__init__", "__main__")}
    own = {p.stem[len("test_"):] for p in TESTS.rglob("test_*.py")}
    assert sorted(modules - own - set(TESTED_ELSEWHERE)) == []
    assert sorted(set(TESTED_ELSEWHERE) & own) == []  # moved to a file of its own: drop it from the list
    for module, (where, marker) in TESTED_ELSEWHERE.items():
        assert marker in (TESTS / where).read_text(), f"{where} does not test {module} ({marker!r})"
