"""Packed fine-tuning: the examples of a batch share rows, each attending only to itself, and every output
equals that of the example run alone.

The Trainer still builds padded random batches, so the protocol is the paper's: the same examples per step,
in the same order, as `batching: random`. Hooks on the encoder inside the task model repack each batch on
the way in and unpack it on the way out:
  1. in:  the padded batch's examples go into rows; positions restart in each example and attention stays
          inside it. Backends that attend per document (document_sdpa, varlen, flash_attention_2) get one row with no
          padding at all. Dense masks (sdpa, eager, flex_attention) cost (row length)^2 per row whatever they
          mask, so their rows are no wider than the batch's longest example: as few as the batch needs, as
          even as possible, never costlier than the padded batch
          (modeling.common.attention, every backend ModernBERT has);
  2. out: the encoder's outputs go back to the padded layout (zeros on padding).
The task head then pools (CLS or mean over the attention mask), classifies and computes its loss exactly
as on the padded batch. What goes is the encoder's work on padding (all of it on per-document backends).

The swap happens inside the model's own forward, so DDP and FSDP wrappers, peft adapters, the Trainer's
loss and its predictions need nothing else. Only ModernBERT takes per-example positions and document masks;
`install_packing` says when a model cannot be packed, and the caller falls back to padded batches.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from modeling.common.attention import PER_DOCUMENT_BACKENDS, packed_attention_kwargs
from modeling.data.packers import balanced_rows


@dataclass
class PackedLayout:
    """Where each real token of a padded [N, L] batch goes in the packed [R, W] rows, and back."""

    padded_shape: tuple[int, int]  # N, L
    row_width: int  # W
    padded_index: torch.Tensor  # flat positions in [N*L] of the real tokens ...
    packed_index: torch.Tensor  # ... and their flat positions in [R*W], in the same order
    doc_ids: torch.Tensor  # [R, W]: the example's number within its row, -1 on row padding
    position_ids: torch.Tensor  # [R, W]: restarting at 0 in every example

    @classmethod
    def from_lengths(cls, lengths: list[int], padded_width: int, device, row_length: int = 0) -> PackedLayout:
        """Rows of up to `row_length` tokens, or of the batch's longest example when that is longer."""
        rows = balanced_rows(lengths, max(row_length, padded_width))
        width = max(sum(lengths[i] for i in row) for row in rows)
        padded_index, packed_index = [], []
        doc_ids = torch.full((len(rows), width), -1, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            offset = 0
            for d, i in enumerate(row):
                n = lengths[i]
                padded_index.extend(range(i * padded_width, i * padded_width + n))
                packed_index.extend(range(r * width + offset, r * width + offset + n))
                doc_ids[r, offset : offset + n] = d
                position_ids[r, offset : offset + n] = torch.arange(n)
                offset += n
        return cls(
            (len(lengths), padded_width),
            width,
            torch.tensor(padded_index, device=device),
            torch.tensor(packed_index, device=device),
            doc_ids.to(device),
            position_ids.to(device),
        )

    @property
    def rows(self) -> int:
        return self.doc_ids.shape[0]

    def pack(self, padded: torch.Tensor, fill: int) -> torch.Tensor:
        """[N, L] token ids -> [R, W]."""
        packed = padded.new_full((self.rows * self.row_width,), fill)
        packed[self.packed_index] = padded.reshape(-1)[self.padded_index]
        return packed.view(self.rows, self.row_width)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """[R, W, H] outputs -> [N, L, H], zeros on padding (differentiable)."""
        hidden = packed.shape[-1]
        real = packed.reshape(-1, hidden).index_select(0, self.packed_index)
        out = packed.new_zeros((self.padded_shape[0] * self.padded_shape[1], hidden))
        return out.index_copy(0, self.padded_index, real).view(*self.padded_shape, hidden)


def right_padded_lengths(attention_mask) -> list[int] | None:
    """Each row's length if the mask is a right-padded [N, L] 0/1 mask (what the padding collators make),
    else None: a mask in any other form is left to the model."""
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        return None
    lengths = attention_mask.sum(dim=1)
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :] < lengths[:, None]
    if not torch.equal(attention_mask.bool(), expected) or int(lengths.min()) == 0:
        return None
    return lengths.tolist()


class PackedEncoder:
    """The two hooks on one ModernBERT encoder module (see the module docstring). The layout of the batch in
    flight is kept per thread: nn.DataParallel runs replicas that share these hooks in threads of their own."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.in_flight = threading.local()
        self.pad_id = encoder.config.pad_token_id or 0
        self.handles = [
            encoder.register_forward_pre_hook(self._pack, with_kwargs=True),
            encoder.register_forward_hook(self._unpack, with_kwargs=True),
        ]

    def _pack(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        lengths = right_padded_lengths(kwargs.get("attention_mask"))
        self.in_flight.layout = None
        asks_for_more = kwargs.get("output_hidden_states") or kwargs.get("output_attentions")  # per-position outputs
        if args or input_ids is None or lengths is None or kwargs.get("position_ids") is not None or asks_for_more:
            return None  # not a plain padded batch of ids: the model runs it as it is
        config = module.config
        # Backends that attend per document cost the same however the examples are laid out: one row, no padding.
        # Dense masks cost (row length)^2 per row: rows no wider than the batch's longest example.
        row_length = sum(lengths) if config._attn_implementation in PER_DOCUMENT_BACKENDS else 0
        layout = PackedLayout.from_lengths(lengths, input_ids.shape[1], input_ids.device, row_length)
        kwargs.update(input_ids=layout.pack(input_ids, self.pad_id), position_ids=layout.position_ids)
        kwargs["attention_mask"] = None  # flash-attn takes sequence offsets instead of a mask
        kwargs.update(
            packed_attention_kwargs(layout.doc_ids, config._attn_implementation, config.sliding_window, module.dtype)
        )
        self.in_flight.layout = layout
        return args, kwargs

    def _unpack(self, module, args, kwargs, output):
        layout = getattr(self.in_flight, "layout", None)
        if layout is None:
            return None
        self.in_flight.layout = None
        if isinstance(output, tuple):  # return_dict=False
            return (layout.unpack(output[0]), *output[1:])
        output.last_hidden_state = layout.unpack(output.last_hidden_state)
        return output

    def remove(self):
        for handle in self.handles:
            handle.remove()


def task_encoder(model):
    """The ModernBERT encoder inside a task model (peft-wrapped or not), or None for other encoders."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "model_type", None) != "modernbert":
        return None
    return getattr(base, base.base_model_prefix, None)


def install_packing(model) -> PackedEncoder | None:
    """Pack every padded batch the model sees from now on; None when the model is not a ModernBERT."""
    encoder = task_encoder(model)
    return PackedEncoder(encoder) if encoder is not None else None
