"""Run as `python tests/batches_seen.py RECIPE OUT STEPS` or under `accelerate launch`: writes, per process,
the masked rows (input ids and labels) of each micro-batch the phase-1 Trainer's data loader hands it for
the first STEPS optimizer steps. tests/integration/test_pretraining.py compares them across launches."""

import json
import sys

from accelerate import PartialState
from transformers import AutoTokenizer

from modeling.common.runtime import join_processes
from modeling.pretrain.model import build_model
from modeling.pretrain.prepare import open_store
from modeling.pretrain.recipe import load_recipe
from modeling.pretrain.runner import set_up_phase


def main(recipe_path: str, out: str, steps: int):
    state = join_processes()
    recipe = load_recipe(recipe_path)
    store = open_store(recipe)
    tokenizer = AutoTokenizer.from_pretrained(store.folder.tokenizer_dir)
    setup = set_up_phase(recipe, 0, build_model(recipe, tokenizer), tokenizer, store, None)
    accumulation = setup.trainer.args.gradient_accumulation_steps
    seen = []
    for _, batch in zip(range(steps * accumulation), setup.trainer.get_train_dataloader(), strict=False):
        seen.append(
            [[ids.tolist(), labels.tolist()] for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)]
        )
    with open(f"{out}.{state.process_index}.json", "w") as handle:
        json.dump({"accumulation": accumulation, "processes": PartialState().num_processes, "batches": seen}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
