"""Run train_mlm.py or finetune.py under FSDP2 on a machine without GPUs, over gloo:

    accelerate launch --config_file accelerate_configs/8gpu_fsdp2.yaml --num_processes 2 \
        tests/fsdp_on_cpu.py train_mlm.py RECIPE ...

accelerate reads the config as on a GPU machine (ACCELERATE_USE_FSDP, FSDP_VERSION=2, the layer class to wrap,
the state dict type), but upgrades a launch to FSDP only from the multi-accelerator distributed types: a CPU
launch stays MULTI_CPU (accelerate/state.py, AcceleratorState.__init__) and would silently train as DDP. This
wrapper makes that one upgrade, the way accelerate does it for GPUs, and then runs the script unchanged.
torch's FSDP2 (fully_shard, DTensor, distributed checkpoints) runs over gloo as over NCCL."""

import os
import runpy
import sys

import accelerate.state
from accelerate.utils import DistributedType

accelerate_init = accelerate.state.AcceleratorState.__init__


def init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    accelerate_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    # Every AcceleratorState() copies PartialState's distributed type over its own again, so the upgrade is
    # made again each time, with the plugin the first Accelerator gave.
    plugin = fsdp_plugin or self.__dict__.get("fsdp_plugin")
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wants_fsdp and plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = plugin


accelerate.state.AcceleratorState.__init__ = init_with_fsdp_on_cpu

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
