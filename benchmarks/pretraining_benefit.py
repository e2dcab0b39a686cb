"""Paired reduced-budget comparison: fine-tuning `gap` from scratch, from denoising-only
pre-training (stage 1) and from full pre-training (stage 2: + MPR + contrast).

  python -m benchmarks.pretraining_benefit --workdir workdirs/compare --seeds 0,1,2

Every fine-tuning run uses the same split, budget and model; only the initialisation
and the fine-tuning seed differ. One stage-1 and one stage-2 run are shared by all
seeds. Writes `<workdir>/comparison.json` with mean and std of test MAE per init.
"""

import json
import os

import numpy as np
from absl import app, flags, logging

from molspectra_jax.configs import finetune_qm9, pretrain_qm9s
from molspectra_jax.train import finetune, pretrain

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/compare", "Run folder.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds.")
_STAGE1 = flags.DEFINE_integer("stage1_steps", 3000, "Denoising pre-training steps.")
_STAGE2 = flags.DEFINE_integer("stage2_steps", 1500, "Spectra pre-training steps.")
_FINETUNE = flags.DEFINE_integer("finetune_steps", 1500, "Fine-tuning steps per run.")
_N_TRAIN = flags.DEFINE_integer("n_train", 10_000, "Fine-tuning molecules.")
_TARGET = flags.DEFINE_string("target", "gap", "QM9 target.")
_SUMMARY = flags.DEFINE_string(
    "summary", "", "Summary JSON path (default <workdir>/comparison.json)."
)


def _pretrain_config(stage: int, steps: int, init_from: str = ""):
    c = pretrain_qm9s.get_config("cpu")
    c.stage, c.init_from = stage, init_from
    c.train.update(num_steps=steps, eval_every=steps, checkpoint_every=steps, progress_bar=False)
    c.optim.warmup_steps = min(c.optim.warmup_steps, steps // 10)
    return c


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    root = _WORKDIR.value
    stage1, stage2 = os.path.join(root, "stage1"), os.path.join(root, "stage2")
    pretrain.train_and_evaluate(_pretrain_config(1, _STAGE1.value), stage1)
    pretrain.train_and_evaluate(_pretrain_config(2, _STAGE2.value, stage1), stage2)
    results = {}
    for seed in _SEEDS.value:  # seeds outer: an interrupted run still has complete pairs
        for init, path in (("scratch", ""), ("denoising", stage1), ("full", stage2)):
            c = finetune_qm9.get_config("cpu")
            c.target, c.seed, c.init_from = _TARGET.value, int(seed), path
            c.data.shuffle_seed = int(seed)
            c.data.n_train, c.data.n_test = _N_TRAIN.value, 10_000
            c.loss.noise_weight = 0.1 if path else 0.0  # noisy nodes with a pre-trained head
            c.train.update(
                num_steps=_FINETUNE.value,
                eval_every=_FINETUNE.value // 5,
                checkpoint_every=_FINETUNE.value,
                progress_bar=False,
            )
            c.optim.warmup_steps = _FINETUNE.value // 10
            out = finetune.train_and_evaluate(c, os.path.join(root, f"{init}_seed{seed}"))
            results.setdefault(init, []).append(out["test_mae"][_TARGET.value])
            summary = {
                k: {"mae": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
                for k, v in results.items()
            }
            with open(_SUMMARY.value or os.path.join(root, "comparison.json"), "w") as f:
                json.dump(
                    {
                        "target": _TARGET.value,
                        "n_train": _N_TRAIN.value,
                        "finetune_steps": _FINETUNE.value,
                        "stage1_steps": _STAGE1.value,
                        "stage2_steps": _STAGE2.value,
                        "results": summary,
                    },
                    f,
                    indent=2,
                )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
