"""Read a training checkpoint's pickle without running anything from it.

Training frameworks (Composer, Lightning, ...) save checkpoints with `torch.save`: a pickle of their own objects
(timestamps, schedulers, run configs) around the tensors. Unpickling imports whatever classes and functions the
file names and calls them, so a checkpoint from elsewhere can run any code. `torch.load(weights_only=True)` is
safe but refuses the whole file as soon as it meets one framework class; plain `torch.load` runs them all.

`load_checkpoint` sits between the two. It accepts only a plain `torch.save` zip (the legacy format's loader and
TorchScript archives run code of their own), then unpickles through `Unpickler`:
- a fixed table of objects is built for real: tensors (torch's rebuild functions), plain containers, dtypes,
  numpy arrays (RNG states) and dates. Each is looked up by its exact (module, name) in the table, never by
  importing or walking attributes, so no dotted or private name reaches anything else. Functions are handed
  out wrapped (`_Call`), and every class handed out either is a built-in type or refuses being built upon, so a
  pickle cannot set attributes on what the table holds;
- a class from a training framework's package (`FRAMEWORK_PACKAGES`) becomes an `Inert` placeholder holding the
  arguments and state it was pickled with: the package is never imported and none of its code runs;
- anything else (`os.system`, `builtins.eval`, `numpy.dtypes._add_dtype_helper`, ...) is refused in one line.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import datetime
import pickle
import zipfile

from modeling.common.errors import DataError

# Packages whose classes a training checkpoint holds (Composer's state, its run config, ModernBERT's own code,
# torchmetrics, the streaming dataset's state): kept as inert placeholders, never imported.
FRAMEWORK_PACKAGES = ("composer", "omegaconf", "streaming", "torchmetrics", "src", "llmfoundry", "transformers")


class RefusedGlobal(DataError):
    """A pickle that names something a checkpoint never holds."""


class _Call:
    """An allowed function as the pickle gets it: callable, and nothing can be set on it (building upon a bare
    Python function would set its attributes, and so change it for the whole process)."""

    __slots__ = ("function",)

    def __init__(self, function):
        object.__setattr__(self, "function", function)

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError(f"refused: setting {name} on {self.function.__qualname__}")

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"refused: building upon {self.function.__qualname__}")


def _allowed() -> dict[tuple[str, str], object]:
    """(module, name) -> what the pickle gets. Built once, from the objects themselves."""
    import importlib

    import numpy
    import numpy.dtypes
    import torch
    import torch._tensor
    import torch._utils

    table: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("datetime", "datetime"): datetime.datetime,
        ("datetime", "timedelta"): datetime.timedelta,
        ("datetime", "date"): datetime.date,
        ("datetime", "timezone"): datetime.timezone,
        ("_codecs", "encode"): _Call(_codecs.encode),  # how protocol 2 writes bytes (numpy arrays)
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch.torch_version", "TorchVersion"): str,  # the torch version Composer records: a str will do
        ("numpy", "ndarray"): numpy.ndarray,
        ("numpy", "dtype"): numpy.dtype,
    }
    rebuilds = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter")
    for name in (*rebuilds, "_rebuild_parameter_with_state"):
        table[("torch._utils", name)] = _Call(getattr(torch._utils, name))
    table[("torch._tensor", "_rebuild_from_type_v2")] = _Call(torch._tensor._rebuild_from_type_v2)
    # numpy 2 moved numpy.core to numpy._core; pickles name either
    multiarray = importlib.import_module(
        "numpy._core.multiarray" if hasattr(numpy, "_core") else "numpy.core.multiarray"
    )
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _Call(multiarray._reconstruct)
        table[(module, "scalar")] = _Call(multiarray.scalar)
    for name, value in vars(torch).items():  # torch.float32 & co. (vars: no lazy submodule is imported)
        if isinstance(value, torch.dtype):
            table[("torch", name)] = value
    for name, value in vars(numpy.dtypes).items():  # the classes numpy pickles dtypes by (built-in types)
        if isinstance(value, type) and issubclass(value, numpy.dtype) and not name.startswith("_"):
            table[("numpy.dtypes", name)] = value
    return table


_TABLE: dict[tuple[str, str], object] | None = None


class Inert:
    """What a framework object becomes: its class's name, and what the pickle passed to build it."""

    module = name = ""

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.args, instance.kwargs, instance.state = args, kwargs, None
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.module}.{self.name}>"


_INERT_CLASSES: dict[tuple[str, str], type] = {}


def inert_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _INERT_CLASSES:
        _INERT_CLASSES[key] = type(name.replace(".", "_"), (Inert,), {"module": module, "name": name})
    return _INERT_CLASSES[key]


class Unpickler(pickle.Unpickler):
    source = "the checkpoint"  # set by load_checkpoint, for the error line

    def find_class(self, module: str, name: str):
        global _TABLE
        if _TABLE is None:
            _TABLE = _allowed()
        # protocol 2 (torch.save's) writes Python 2 names (__builtin__.set); judge them by their Python 3 names
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _TABLE:
            return _TABLE[(module, name)]
        if module.split(".")[0] in FRAMEWORK_PACKAGES:
            return inert_class(module, name)
        raise RefusedGlobal(
            f"{self.source}: refused: the pickle asks for {module}.{name}, which no checkpoint needs "
            "(nothing was imported or run); only load checkpoints from people you trust"
        )


class _GuardedModule:
    """What torch.load needs of a pickle module: `Unpickler`, `load` and a `__name__`."""

    __name__ = "modeling.common.safe_pickle"

    def __init__(self, unpickler: type):
        self.Unpickler = unpickler

    def load(self, file, **kwargs):
        return self.Unpickler(file, **kwargs).load()


def load_checkpoint(path) -> object:
    """A `torch.save` zip read on the CPU, tensors memory-mapped, nothing run."""
    import torch

    _check_archive(path)

    class Guarded(Unpickler):
        source = str(path)

    try:
        return torch.load(
            path, map_location="cpu", pickle_module=_GuardedModule(Guarded), weights_only=False, mmap=True
        )
    except RefusedGlobal:
        raise
    except Exception as error:  # a damaged or hostile file fails in many ways; each is this one line
        raise DataError(f"{path}: not a readable torch checkpoint ({_first_line(error)})") from None


def _check_archive(path) -> None:
    """Only the zip `torch.save` writes (and Composer uses): the legacy format's loader acts on what the pickle
    says (it can write files), and a TorchScript archive is handed to torch.jit.load, which runs its code."""
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path}: not a zip-format torch.save file (the legacy format is refused: its loader can be made to "
            "write files); re-save it with a current torch.save"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{path}: not a readable zip archive ({error})") from None
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise DataError(f"{path}: a TorchScript archive, whose code would run when loaded; refused")
    if not any(n.endswith("data.pkl") for n in names):
        raise DataError(f"{path}: a zip archive without data.pkl, not a torch.save checkpoint")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
