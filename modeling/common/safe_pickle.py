"""Read a training checkpoint's pickle without running anything from it.

Training frameworks (Composer, Lightning, ...) save checkpoints with `torch.save`: a pickle of their own objects
(timestamps, schedulers, run configs) around the tensors. Unpickling imports whatever classes and functions the
file names and calls them, so a checkpoint from elsewhere can run any code. `torch.load(weights_only=True)` is
safe but refuses the whole file as soon as it meets one framework class; plain `torch.load` runs them all.

This module is a `pickle_module` for `torch.load(..., pickle_module=safe_pickle, weights_only=False)` that sits
between the two:
- tensors, plain containers, dtypes, numpy arrays (RNG states) and dates are built for real;
- a class from a training framework's package (`FRAMEWORK_PACKAGES`) becomes an `Inert` placeholder holding the
  arguments and state it was pickled with: the package is never imported and none of its code runs;
- anything else the pickle asks for (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) is refused in one line
  before it is looked up.
"""

from __future__ import annotations

import _compat_pickle
import pickle

from modeling.common.errors import DataError

# Objects a checkpoint may build for real: constructors of values, none with side effects.
ALLOWED = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("builtins", "range"),
    ("_codecs", "encode"),  # how protocol 2 writes bytes (numpy arrays): text to bytes
    ("datetime", "datetime"),
    ("datetime", "timedelta"),
    ("datetime", "date"),
    ("datetime", "timezone"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "Tensor"),
    ("torch.torch_version", "TorchVersion"),  # a str: the torch version Composer records
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}
# numpy pickles dtypes by class (numpy.dtypes.Float32DType, ...): value types, no side effects
ALLOWED_MODULES = ("numpy.dtypes",)
# Packages whose classes a training checkpoint holds (Composer's state, its run config, ModernBERT's own code,
# torchmetrics, the streaming dataset's state): kept as inert placeholders, never imported.
FRAMEWORK_PACKAGES = ("composer", "omegaconf", "streaming", "torchmetrics", "src", "llmfoundry", "transformers")


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


class RefusedGlobal(DataError):
    """A pickle that names something a checkpoint never holds."""


class Unpickler(pickle.Unpickler):
    source = "the checkpoint"  # set by load_checkpoint, for the error line

    def find_class(self, module: str, name: str):
        # protocol 2 (torch.save's) writes Python 2 names (__builtin__.set); judge them by their Python 3 names
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in ALLOWED or module in ALLOWED_MODULES:
            return super().find_class(module, name)
        if module == "torch" and _is_torch_dtype(name):
            return super().find_class(module, name)
        if module.split(".")[0] in FRAMEWORK_PACKAGES:
            return inert_class(module, name)
        raise RefusedGlobal(
            f"{self.source}: refused: the pickle asks for {module}.{name}, which no checkpoint needs "
            "(nothing was imported or run); only load checkpoints from people you trust"
        )


def _is_torch_dtype(name: str) -> bool:
    import torch

    return isinstance(getattr(torch, name, None), torch.dtype)


def load_checkpoint(path) -> object:
    """A `torch.save` file read on the CPU, tensors memory-mapped where the format allows, nothing run."""
    import torch

    class Guarded(Unpickler):
        source = str(path)

    module = _GuardedModule(Guarded)
    try:
        return torch.load(path, map_location="cpu", pickle_module=module, weights_only=False, mmap=True)
    except RefusedGlobal:
        raise
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise DataError(f"{path}: not a readable torch checkpoint ({_first_line(error)})") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path}: not a readable torch checkpoint ({_first_line(error)})") from None
    try:  # the legacy (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", pickle_module=module, weights_only=False)
    except RefusedGlobal:
        raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path}: not a readable torch checkpoint ({_first_line(error)})") from None


class _GuardedModule:
    """What torch.load needs of a pickle module: `Unpickler`, `load` and a `__name__`."""

    __name__ = "modeling.common.safe_pickle"

    def __init__(self, unpickler: type):
        self.Unpickler = unpickler

    def load(self, file, **kwargs):
        return self.Unpickler(file, **kwargs).load()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
