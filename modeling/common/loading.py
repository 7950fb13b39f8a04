"""Loading checkpoints the safe way: safetensors only, stock transformers classes only."""

from __future__ import annotations

from pathlib import Path

from modeling.common.attention import DOCUMENT_SDPA, register_document_sdpa
from modeling.common.errors import ConfigError

PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def load_pretrained(
    auto_class, path: str, allow_pickle: bool = False, flag: str = "--model.allow_pickle true", **kwargs
):
    """`auto_class.from_pretrained` from safetensors only, unless `allow_pickle`: pickle weights
    (pytorch_model.bin, *.pt) can run arbitrary code while they are unpickled. `flag` is how the
    calling command lets a user allow them, for the error message."""
    if not allow_pickle and Path(path).is_dir() and not any(Path(path).glob("*.safetensors")):
        pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in Path(path).glob(pattern))
        if pickles:
            raise ConfigError(
                f"{path}: holds only pickle weights ({', '.join(pickles)}), which can run code when loaded; "
                f"convert them to safetensors, or pass {flag} if you trust their source"
            )
    if kwargs.get("attn_implementation") == DOCUMENT_SDPA:
        register_document_sdpa()
    try:
        return auto_class.from_pretrained(path, use_safetensors=None if allow_pickle else True, **kwargs)
    except OSError as error:
        if not allow_pickle and "safetensors" in str(error):
            raise ConfigError(
                f"{path}: no safetensors weights ({error}); pickle weights are loaded only with {flag}"
            ) from None
        raise
