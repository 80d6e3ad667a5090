"""What a star import of each module brings, as in fastai 0.7 (spec 1.1).

The original modules had no `__all__` and star-imported one another, so
`from fastai.conv_learner import *` alone put numpy, torch, the transforms, the data classes and
the metrics in scope; every lesson after the first starts with that one line. Here each module
keeps its own namespace clean and instead lists the modules the original star-imported:
`reexport` gives it an `__all__` with their public names too, and a module `__getattr__`
(PEP 562, which star imports also go through) that fetches those names from them. A module's own
definitions win; among the listed modules the later one wins, as the later star import did.
"""
import importlib
import types


def reexport(module_name, own, sources):
    """(`__all__`, `__getattr__`) for `module_name`, whose own public names are `own` and which
    re-exports every name in the `__all__` of each module in `sources` (in import order)."""
    where = {}
    for source in sources:
        for name in source.__all__:
            where[name] = source  # later sources win
    own = list(own)
    names = sorted(set(own) | set(where))

    def __getattr__(name):
        source = where.get(name)
        if source is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        return getattr(source, name)

    return names, __getattr__


class LazyModule(types.ModuleType):
    """A module imported on first attribute access: `pd` and `metrics` (sklearn's) cost nothing
    until a notebook uses them, and say how to install their package when it is missing."""

    def __init__(self, name, package):
        super().__init__(name)
        self.__dict__["_lazy_package"] = package

    def _load(self):
        try:
            module = importlib.import_module(self.__name__)
        except ImportError as e:
            raise ImportError(f"{self.__name__} is needed here: pip install "
                              f"{self.__dict__['_lazy_package']}") from e
        # From now on attribute lookups find the real module's names directly.
        self.__dict__.update(module.__dict__)
        return module

    def __getattr__(self, attr):
        return getattr(self._load(), attr)

    def __dir__(self):
        return dir(self._load())

    def __repr__(self):
        return f"<module {self.__name__!r} (imported on first use)>"
