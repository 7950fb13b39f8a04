"""Loading checkpoints the safe way: no code from a model folder ever runs, weights from safetensors only,
stock transformers classes only.

Every config, tokenizer and model the project loads goes through here. Each load passes
`trust_remote_code=False`, so transformers never asks "run the custom code? [y/N]": a local folder whose
config or tokenizer config names custom code (`auto_map`) is refused before transformers reads it, and a
Hub repository that needs custom code fails in transformers and is reported in one line.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from modeling.common.attention import known_attention
from modeling.common.errors import ConfigError

PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
CONFIG_FILES = ("config.json", "tokenizer_config.json", "adapter_config.json")


def refuse_remote_code(path: str | Path) -> None:
    """A local folder that asks for custom code is refused; nothing in it is imported."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return
    for name in CONFIG_FILES:
        file = folder / name
        if not file.is_file():
            continue
        try:
            settings = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{file}: not readable JSON ({error})") from None
        if isinstance(settings, dict) and settings.get("auto_map"):
            names = ", ".join(sorted(settings["auto_map"])) if isinstance(settings["auto_map"], dict) else "custom code"
            raise ConfigError(
                f"{file}: asks for custom code ({names} in auto_map), which this project never runs; "
                "use a checkpoint of a model transformers ships (ModernBERT, BERT, ...)"
            )


def special_token_ids(tokenizer) -> dict[str, int]:
    """The ids a ModernBertConfig takes from its tokenizer (a model must predict with the ids its tokenizer
    writes); ModernBERT's bos/eos are its [CLS]/[SEP]."""
    return dict(
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )


def require_local_folder(path: str | Path) -> None:
    """A path that can only be a local one (absolute, ./ ../ ~, or deeper than a Hub id's namespace/name) and is
    not there is named as a missing folder, not passed on for transformers to call it a bad Hub repo id."""
    text = str(path)
    local = text.startswith(("/", "./", "../", "~")) or text.count("/") >= 2 or "\\" in text
    if local and not Path(text).expanduser().exists():
        raise ConfigError(f"{text}: no such folder (a local path; a Hub id is namespace/name)")


def _remote_code_error(path, error: Exception) -> Exception:
    text = str(error)
    if "trust_remote_code" in text:
        return ConfigError(f"{path}: needs custom code (trust_remote_code), which this project never runs")
    return error


def load_config(path: str, **kwargs):
    from transformers import AutoConfig

    require_local_folder(path)
    refuse_remote_code(path)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False, **kwargs)
    except ValueError as error:
        raise _remote_code_error(path, error) from None


def load_tokenizer(path: str | Path, **kwargs):
    from transformers import AutoTokenizer

    require_local_folder(path)
    refuse_remote_code(path)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False, **kwargs)
    except ValueError as error:
        raise _remote_code_error(path, error) from None


def load_pretrained(
    auto_class, path: str, allow_pickle: bool = False, flag: str = "--model.allow_pickle true", **kwargs
):
    """`auto_class.from_pretrained` from safetensors only, unless `allow_pickle`: pickle weights
    (pytorch_model.bin, *.pt) can run arbitrary code while they are unpickled. `flag` is how the
    calling command lets a user allow them, for the error message."""
    require_local_folder(path)
    refuse_remote_code(path)
    if not allow_pickle and Path(path).is_dir() and not any(Path(path).glob("*.safetensors")):
        pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in Path(path).glob(pattern))
        if pickles:
            raise ConfigError(
                f"{path}: holds only pickle weights ({', '.join(pickles)}), which can run code when loaded; "
                f"convert them to safetensors, or pass {flag} if you trust their source"
            )
    if "attn_implementation" in kwargs:
        kwargs["attn_implementation"] = known_attention(kwargs["attn_implementation"])
    try:
        # use_kernels=False: transformers (>= 5.24) otherwise swaps layers for kernels fetched from the Hub (code,
        # on CUDA: ModernBERT's rotary embedding) and refuses to load at all where the `kernels` package is missing
        # (seen on the GPU image); a model read back must run the same code as the one built from its config.
        return auto_class.from_pretrained(
            path,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=False,
            use_kernels=False,
            **kwargs,
        )
    except OSError as error:
        if not allow_pickle and "safetensors" in str(error):
            raise ConfigError(
                f"{path}: no safetensors weights ({error}); pickle weights are loaded only with {flag}"
            ) from None
        raise
    except pickle.UnpicklingError as error:  # torch.load(weights_only=True) met something that is not weights
        first = (str(error).strip().splitlines() or ["not weights"])[0]
        raise ConfigError(f"{path}: its pickle weights hold more than weights, refused unread ({first})") from None
    except ValueError as error:
        raise _remote_code_error(path, error) from None
