"""Memory per GPU for ModernBERT-base and -large: model states under DDP, FSDP2 (full shard) and DeepSpeed ZeRO-2,
the activations of one 8,192-token sequence, and the largest per-device batch that fits a given GPU.

All figures are computed, none measured on a GPU:
  parameters    counted on the real model classes, built on the meta device (no memory, no download)
  model states  mixed precision with AdamW: fp32 weights (4 bytes/parameter), fp32 gradients (4) and AdamW's two
                fp32 moments (8). DDP keeps all 16 on every rank (plus its gradient buckets, another 4);
                FSDP2 full shard keeps 16/N and gathers one layer's bf16 weights at a time (two with prefetch);
                ZeRO-2 keeps the weights whole and shards gradients and moments: 4 + 12/N.
  activations   the bytes autograd saves in one training forward of the encoder in bf16, counted tensor by tensor
                (saved-tensor hooks on the meta device, each storage once, weights left out) with a
                flash-attention-like kernel (saves the output and the log-sum-exp, O(length)); plus the MLM head
                on the masked 30% (logits in bf16, upcast to fp32 for the loss)
  checkpointing with activation checkpointing per layer: each layer's bf16 input is kept, one layer's
                activations are rebuilt at a time in backward
  largest batch (GPU memory x (1 - reserve) - model states) / activations per sequence; the reserve stands for
                the CUDA context, the allocator's fragmentation and kernels' workspaces

    python -m benchmarks.memory
    python -m benchmarks.memory --gpu_gb 141 --ranks 8 --reserve 0.1
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, ModernBertConfig, ModernBertForMaskedLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from benchmarks.common import arguments, markdown_table, write_json

SHAPES = {
    "ModernBERT-base": dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12),
    "ModernBERT-large": dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16),
}
VOCAB = 50368
GB = 1e9


def _flash_like_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    # aten's flash kernel has a meta implementation: what it saves for backward is what flash-attn saves.
    out = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, 0.0, False, scale=scaling)[0]
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("saved_bytes_fused", _flash_like_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register("saved_bytes_fused", sdpa_mask)


def meta_model(shape: str, sequence_length: int) -> ModernBertForMaskedLM:
    config = ModernBertConfig(vocab_size=VOCAB, max_position_embeddings=sequence_length, **SHAPES[shape])
    with torch.device("meta"):
        return ModernBertForMaskedLM._from_config(config, attn_implementation="saved_bytes_fused", dtype=torch.bfloat16)


class SavedBytes:
    """Bytes autograd saves for backward, each storage counted once (views of one tensor share it); weights are
    not activations and are left out."""

    def __init__(self, model):
        # Weights (and their transposed views, which linear layers save) are counted with the model states.
        self.bytes, self.seen = 0, {p.untyped_storage()._cdata for p in model.parameters()}

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        if storage._cdata not in self.seen:  # the storage's own address: alive while autograd holds the tensor
            self.seen.add(storage._cdata)
            self.bytes += storage.nbytes()
        return tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def activation_bytes(model: ModernBertForMaskedLM, sequence_length: int, masking: float) -> dict[str, int]:
    """Saved bytes of one sequence: the encoder, and the MLM head on the masked positions."""
    ids = torch.zeros(1, sequence_length, dtype=torch.long, device="meta")
    encoder, head = SavedBytes(model), SavedBytes(model)
    with encoder.hooks():
        hidden = model.model(input_ids=ids).last_hidden_state
    masked = round(sequence_length * masking)
    with head.hooks():
        logits = model.decoder(model.head(hidden[0, :masked]))
        torch.nn.functional.cross_entropy(logits.float(), torch.zeros(masked, dtype=torch.long, device="meta"))
    return {"encoder": encoder.bytes, "head": head.bytes}


def state_bytes(parameters: int, layer_parameters: int, ranks: int) -> dict[str, float]:
    """Per-rank bytes of weights, gradients and optimizer moments under each engine."""
    full = 16 * parameters
    return {
        "DDP": full + 4 * parameters,  # + gradient buckets
        "FSDP2": full / ranks + 2 * 2 * layer_parameters,  # + one gathered bf16 layer, and the next one prefetched
        "ZeRO-2": 4 * parameters + 12 * parameters / ranks,
    }


def figures(shape: str, ranks: int, gpu_gb: float, reserve: float, sequence_length: int, masking: float) -> dict:
    model = meta_model(shape, sequence_length)
    parameters = sum(p.numel() for p in model.parameters())
    layer_parameters = max(sum(p.numel() for p in layer.parameters()) for layer in model.model.layers)
    activations = activation_bytes(model, sequence_length, masking)
    per_sequence = activations["encoder"] + activations["head"]
    layers = model.config.num_hidden_layers
    checkpointed = (
        layers * sequence_length * model.config.hidden_size * 2 + activations["encoder"] / layers + activations["head"]
    )
    usable = gpu_gb * GB * (1 - reserve)
    engines = {}
    for engine, states in state_bytes(parameters, layer_parameters, ranks).items():
        engines[engine] = {
            "states_gb": states / GB,
            "largest_batch": max(0, int((usable - states) // per_sequence)),
            "largest_batch_checkpointing": max(0, int((usable - states) // checkpointed)),
        }
    return {
        "shape": shape,
        "parameters": parameters,
        "activations_gb_per_sequence": per_sequence / GB,
        "checkpointed_gb_per_sequence": checkpointed / GB,
        "encoder_gb": activations["encoder"] / GB,
        "head_gb": activations["head"] / GB,
        "engines": engines,
    }


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--ranks", type=int, default=8, help="processes the states are sharded over")
    parser.add_argument("--gpu_gb", type=float, default=80.0, help="GPU memory in GB (H100 80 GB)")
    parser.add_argument(
        "--reserve", type=float, default=0.1, help="share of GPU memory kept for context and workspaces"
    )
    parser.add_argument("--sequence_length", type=int, default=8192)
    parser.add_argument("--masking", type=float, default=0.3)
    args = parser.parse_args(argv)
    rows, results = [], []
    for shape in SHAPES:
        result = figures(shape, args.ranks, args.gpu_gb, args.reserve, args.sequence_length, args.masking)
        results.append(result)
        for engine, figure in result["engines"].items():
            rows.append(
                [
                    shape,
                    f"{result['parameters'] / 1e6:.1f}M",
                    engine,
                    f"{figure['states_gb']:.2f}",
                    f"{result['activations_gb_per_sequence']:.2f}",
                    figure["largest_batch"],
                    f"{result['checkpointed_gb_per_sequence']:.2f}",
                    figure["largest_batch_checkpointing"],
                ]
            )
    print(
        f"{args.ranks} ranks, {args.gpu_gb:g} GB per GPU, {args.reserve:.0%} reserved, sequences of "
        f"{args.sequence_length} tokens, {args.masking:.0%} masked; computed, not measured"
    )
    print(
        markdown_table(
            ["model", "parameters", "engine", "states per rank (GB)", "activations per sequence (GB)", "largest batch"]
            + ["with checkpointing (GB)", "largest batch"],
            rows,
        )
    )
    write_json(args.json, {"settings": vars(args), "models": results})


if __name__ == "__main__":
    main()
