"""Processes started by `accelerate launch` in tests/test_data_parallel.py (one per rank).

    dp_worker.py train MODEL_DIR OUT   one GRPO step of the real trainer on fixed samples;
                                       rank 0 saves the LoRA weights and metrics to OUT
    dp_worker.py sample OUT            the bundled model's sampler, sharded over the ranks;
                                       rank 0 saves the gathered completions to OUT
    dp_worker.py cli ARGS...           `minisir ARGS...`, every OpenSIR round made to train
                                       (tiny_run.force_training), so the gradient sum runs
                                       whatever this CPU's kernels sample
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)


def fixed_samples():
    """Two groups of four completions, with rewards that differ within each group."""
    from minisir.trainer import Sample

    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(2):
        prompt = [2] + torch.randint(3, 512, (3 + k,), generator=g).tolist()
        for j in range(4):
            n = 4 + (j % 3)
            comp = torch.randint(3, 512, (n,), generator=g).tolist()
            lps = (-torch.rand(n, generator=g) * 3 - 4).tolist()
            out.append(Sample(prompt, comp, lps, reward=float(j % 2 + k), group=f"g{k}"))
    return out


def train(model_dir: str, out: str) -> None:
    from minisir.data_parallel import Ranks
    from minisir.trainer import GRPOTrainer, TrainerConfig

    ranks = Ranks.from_env()
    tr = GRPOTrainer(TrainerConfig(learning_rate=1e-2, updates_per_step=2), None, hf_dir=Path(model_dir), seed=0,
                     ranks=ranks)
    metrics = tr.step(fixed_samples())
    shares = ranks.gather([metrics.get("rank_tokens")])
    ranks.close()  # every rank leaves the group before exiting (a live gloo group aborts at exit)
    if ranks.is_main:
        lora = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
        torch.save({"lora": lora, "metrics": metrics, "shares": shares, "world": ranks.world,
                    "group_left": not torch.distributed.is_initialized()}, out)


def sample(out: str) -> None:
    import pickle

    from minisir.assets import resolve_gguf
    from minisir.data_parallel import Ranks, ShardedSampler
    from minisir.sampler import Sampler

    ranks = Ranks.from_env()
    local = Sampler(resolve_gguf("bundled"), n_ctx=1024, n_parallel=4, n_threads=1)
    prompts = ["Problem: What is 2 + 3?\nSolution:", "The sky is", "My favourite animal is the"]
    kwargs = dict(n=3, max_tokens=8, temperature=1.0, seed=5)
    groups = ShardedSampler(local, ranks).generate(prompts, **kwargs)
    ranks.close()
    if ranks.is_main:  # what one process draws alone, for the test to compare
        Path(out).write_bytes(pickle.dumps({"groups": groups, "one_process": local.generate(prompts, **kwargs)}))


def cli(args: list[str]) -> None:
    from tiny_run import force_training

    from minisir.cli import main

    force_training(types.SimpleNamespace(setattr=setattr))
    main(args)


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    {"train": lambda: train(*rest), "sample": lambda: sample(*rest), "cli": lambda: cli(rest)}[mode]()
