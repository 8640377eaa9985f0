"""Import the parts of compressai that coding uses, without the rest of compressai.

compressai 1.2.8's package `__init__` imports every subpackage, and `compressai.registry` imports
torch_geometric's transforms, which bring in torch._dynamo, transformers, pandas and more: 2.3 s of a
4.6 s cold decode (`python -X importtime`). Here those two `__init__`s run without those imports; the
names they would have bound are imported when first read instead (PEP 562), so `compressai.zoo` or
`compressai.registry.TRANSFORMS` still work for whoever asks. compressai.entropy_models imports
scipy.stats (0.5 s) for one call, in GaussianConditional.update, which builds the tables that shipped
weights already carry: it is loaded on first use (importlib.util.LazyLoader). Importing this module does
all that once; `import compressai` afterwards gets the same, lighter package. Where compressai's source
is not as expected, it is imported as it is: slower, never different.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import Any

#: package -> the module that the package's __init__ imports from eagerly and that is deferred here.
DEFERRED = {"compressai": "compressai", "compressai.registry": "compressai.registry.transforms"}


def _import_deferring(package: str, heavy: str) -> None:
    """Run `package`'s __init__ with its `from <heavy> import ...` statements left out, each name they bind
    imported when first read instead."""
    spec = importlib.util.find_spec(package)
    source = spec.loader.get_source(package) if spec and spec.loader else None
    if package in sys.modules or source is None:
        importlib.import_module(package)
        return
    tree = ast.parse(source, spec.origin)

    def is_heavy(node: ast.stmt) -> bool:
        return isinstance(node, ast.ImportFrom) and \
            importlib.util.resolve_name("." * node.level + (node.module or ""), package) == heavy

    later = {a.asname or a.name: a.name for n in tree.body if is_heavy(n) for a in n.names}  # type: ignore[attr-defined]
    if not later or "*" in later:
        importlib.import_module(package)
        return
    tree.body = [n for n in tree.body if not is_heavy(n)]
    module = importlib.util.module_from_spec(spec)

    def deferred(name: str) -> Any:
        if name not in later:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # `from package import sub` binds a submodule; `from package.sub import x` an attribute of one
        value = (importlib.import_module(f"{heavy}.{later[name]}") if heavy == package
                 else getattr(importlib.import_module(heavy), later[name]))
        setattr(module, name, value)
        return value

    module.__getattr__ = deferred  # type: ignore[method-assign]
    sys.modules[package] = module
    try:
        exec(compile(tree, spec.origin, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[package]
        raise
    parent, _, child = package.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


class _LazyScipyStats(importlib.abc.MetaPathFinder):
    """Finds scipy.stats with a loader that runs it on first attribute access."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "scipy.stats":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


for _package, _heavy in DEFERRED.items():
    _import_deferring(_package, _heavy)
_lazy_scipy = _LazyScipyStats()
sys.meta_path.insert(0, _lazy_scipy)
try:
    importlib.import_module("compressai.entropy_models")
finally:
    sys.meta_path.remove(_lazy_scipy)
