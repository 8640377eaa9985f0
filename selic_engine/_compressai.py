"""Import compressai once, without the transformers import it drags in (see _NoTransformers)."""

import importlib.abc
import sys
import warnings


class _NoTransformers(importlib.abc.MetaPathFinder):
    """compressai imports torch_geometric, whose llm package tries `import transformers` (and falls back to
    a plain alias on ImportError). Refusing it while compressai loads keeps decoding free of transformers,
    which only the encoder's semantic branch needs."""

    def find_spec(self, name, path, target=None):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("transformers is not needed to load compressai")
        return None


def _import_compressai() -> None:
    blocker = _NoTransformers() if "transformers" not in sys.modules else None
    if blocker:
        sys.meta_path.insert(0, blocker)
    try:
        with warnings.catch_warnings():  # compressai 1.2.8 uses torch.jit.script at import time
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
            import compressai  # noqa: F401
    finally:
        if blocker:
            sys.meta_path.remove(blocker)


_import_compressai()
