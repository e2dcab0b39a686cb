"""Accuracy parity: torchmd-net's ET and ours trained the same way on the same molecules.

  python -m benchmarks.parity_torchmdnet --out benchmarks/results/cpu_parity_torchmdnet.json
  python -m benchmarks.parity_torchmdnet --epochs 1          # a quick look (~4 min)
  python -m benchmarks.parity_torchmdnet --seed 1 --out ...  # another initialisation

Protocol (every choice fixed, the same for both): qm9pack's 130,831 molecules,
`perm = np.random.default_rng(0).permutation(n)`, train `perm[:10000]`, valid
`perm[10000:11000]`, test `perm[11000:13000]`; target `gap` (meV), standardized by the
train mean and std; ET 64 hidden, 3 layers, 4 heads, 32 exp-normal RBFs (fixed),
cutoff 5 Å, max 32 neighbours, SiLU, neighbour embedding, no vector norm,
EquivariantScalar head summed over atoms; AdamW lr 5e-4, no weight decay, linear warmup
over 500 steps then cosine to 1e-6; batch 32, 25 epochs (7,825 steps), train order
reshuffled each epoch; MSE loss; test MAE of the best-validation weights.

Each arm runs in its own process, one after the other (never side by side on 2 cores);
torchmd-net's with the malloc settings it needs on this machine. Needs the
`torchmdnet` extra (`pip install -e ".[torchmdnet]"`).
"""

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags, logging

_ARM = flags.DEFINE_enum("arm", "both", ["both", "ours", "torchmdnet"], "Which model to train.")
_EPOCHS = flags.DEFINE_integer("epochs", 25, "Training epochs (313 steps each).")
_OUT = flags.DEFINE_string("out", "", "JSON results here (both arms: the comparison).")
_THREADS = flags.DEFINE_integer("threads", 2, "CPU threads for each model.")
_SEED = flags.DEFINE_integer("seed", 0, "Initialisation and shuffling seed of both (split fixed).")

TARGET = "gap"
N_TRAIN, N_VALID, N_TEST = 10_000, 1_000, 2_000
BATCH, LR, WARMUP, FINAL_LR = 32, 5e-4, 500, 1e-6
ET = dict(hidden=64, num_layers=3, num_heads=4, num_rbf=32, cutoff=5.0, max_num_neighbors=32)
TORCH_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def protocol_split(n: int) -> dict[str, np.ndarray]:
    perm = np.random.default_rng(0).permutation(n)
    return {
        "train": perm[:N_TRAIN],
        "valid": perm[N_TRAIN : N_TRAIN + N_VALID],
        "test": perm[N_TRAIN + N_VALID : N_TRAIN + N_VALID + N_TEST],
    }


def steps_per_epoch() -> int:
    return math.ceil(N_TRAIN / BATCH)


def learning_rate(step: int, total: int) -> float:
    """optax.warmup_cosine_decay_schedule(0, LR, WARMUP, total, FINAL_LR) at `step`."""
    if step < WARMUP:
        return LR * step / WARMUP
    progress = min((step - WARMUP) / (total - WARMUP), 1.0)
    return FINAL_LR + (LR - FINAL_LR) * 0.5 * (1 + math.cos(math.pi * progress))


def _qm9():
    from molspectra_jax.data.qm9 import load_qm9

    return load_qm9().select_targets((TARGET,))


def run_ours(epochs: int, workdir: str, seed: int) -> dict:
    """Our fine-tuning task with the protocol's split (a splits.npz) and settings."""
    from molspectra_jax.configs import finetune_qm9
    from molspectra_jax.train import finetune

    n = len(_qm9())
    split = protocol_split(n)
    split_file = os.path.join(workdir, "splits.npz")
    np.savez(split_file, idx_train=split["train"], idx_val=split["valid"], idx_test=split["test"])
    c = finetune_qm9.get_config()
    c.seed = seed
    c.data.shuffle_seed = seed
    c.target = TARGET
    c.data.update(split_file=split_file, n_train=-1, n_valid=-1, n_test=-1)
    c.data.update(batch_size=BATCH, eval_batch_size=128)
    c.model.update(layernorm_on_vec="none", layer_norms=False, **ET)
    c.heads.atomref = ()
    c.optim.update(learning_rate=LR, warmup_steps=WARMUP, final_lr_factor=FINAL_LR / LR)
    c.optim.update(weight_decay=0.0, clip_norm=0.0)
    total = epochs * steps_per_epoch()
    every = steps_per_epoch()
    c.train.update(num_steps=total, eval_every=every, checkpoint_every=total, log_every=every)
    c.train.progress_bar = False
    start = time.perf_counter()
    results = finetune.train_and_evaluate(c, os.path.join(workdir, "run"))
    return {
        "test_mae_meV": float(results["test_mae"][TARGET]),
        "mean_predictor_mae_meV": float(results["mean_predictor_mae"][TARGET]),
        "steps": total,
        "wall_s": time.perf_counter() - start,
    }


def run_torchmdnet(epochs: int, seed: int) -> dict:
    """torchmd-net 3.x's own ET and EquivariantScalar output, trained by a plain loop."""
    import torch
    from torchmdnet.models.model import create_model

    torch.manual_seed(seed)
    data = _qm9()
    split = protocol_split(len(data))
    y = data.targets[:, 0]
    mean, std = y[split["train"]].mean(), y[split["train"]].std()
    from molspectra_jax.interop.torchmdnet import hyperparameters

    args = hyperparameters(dict(name="et", **ET))  # the same ET, by torchmd-net's names
    model = create_model(
        args,
        mean=torch.tensor(mean, dtype=torch.float32),
        std=torch.tensor(std, dtype=torch.float32),
    )
    molecules = [data.molecule(m) for m in range(len(data))]

    def batch(rows):
        z = np.concatenate([molecules[m][0] for m in rows])
        pos = np.concatenate([molecules[m][1] for m in rows])
        index = np.repeat(np.arange(len(rows)), [len(molecules[m][0]) for m in rows])
        tensors = (torch.from_numpy(z.astype(np.int64)), torch.from_numpy(pos))
        return (*tensors, torch.from_numpy(index), torch.from_numpy(y[rows].astype(np.float32)))

    def mae(rows) -> float:
        model.eval()
        errors = []
        with torch.no_grad():
            for i in range(0, len(rows), 128):
                z, pos, index, target = batch(rows[i : i + 128])
                pred, _ = model(z, pos, index)
                errors.append((pred[:, 0].double() - target.double()).abs().numpy())
        model.train()
        return float(np.concatenate(errors).mean())

    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
    total, per_epoch = epochs * steps_per_epoch(), steps_per_epoch()
    rng = np.random.default_rng(seed)
    best, best_state, step = math.inf, None, 0
    start = time.perf_counter()
    for epoch in range(epochs):
        order = split["train"][rng.permutation(N_TRAIN)]
        for i in range(per_epoch):
            z, pos, index, target = batch(order[i * BATCH : (i + 1) * BATCH])
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total)
            pred, _ = model(z, pos, index)
            # MSE on standardized targets, as ours (the same minimizer; Adam is scale-free)
            loss = (((pred[:, 0] - target) / float(std)) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        valid = mae(split["valid"])
        print(f"torchmd-net epoch {epoch + 1}/{epochs}: valid MAE {valid:.2f} meV", flush=True)
        if valid < best:
            best, best_state = valid, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {
        "test_mae_meV": mae(split["test"]),
        "best_valid_mae_meV": best,
        "mean_predictor_mae_meV": float(np.abs(y[split["test"]] - mean).mean()),
        "steps": total,
        "wall_s": time.perf_counter() - start,
        "torch": torch.__version__,
    }


def _arm_in_subprocess(arm: str, epochs: int, threads: int, seed: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if arm == "torchmdnet":
        env.update(TORCH_ENV)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, "-m", "benchmarks.parity_torchmdnet", f"--arm={arm}"]
        command += [f"--epochs={epochs}", f"--threads={threads}", f"--seed={seed}"]
        command += [f"--out={out.name}"]
        subprocess.run(command, check=True, env=env)
        with open(out.name) as f:
            return json.load(f)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax's per-save INFO lines
    epochs, threads, seed = _EPOCHS.value, _THREADS.value, _SEED.value
    if _ARM.value == "ours":
        with tempfile.TemporaryDirectory() as workdir:
            result = run_ours(epochs, workdir, seed)
    elif _ARM.value == "torchmdnet":
        import torch

        torch.set_num_threads(threads)
        result = run_torchmdnet(epochs, seed)
    else:
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, {threads} threads per model",
            "epochs": epochs,
            "seed": seed,
            "torchmdnet": _arm_in_subprocess("torchmdnet", epochs, threads, seed),
            "ours": _arm_in_subprocess("ours", epochs, threads, seed),
        }
        ratio = result["ours"]["test_mae_meV"] / result["torchmdnet"]["test_mae_meV"]
        result["ratio_ours_over_torchmdnet"] = ratio
        print(
            f"test MAE gap (meV): torchmd-net {result['torchmdnet']['test_mae_meV']:.2f}, "
            f"ours {result['ours']['test_mae_meV']:.2f} (ratio {ratio:.3f}); mean predictor "
            f"{result['torchmdnet']['mean_predictor_mae_meV']:.2f}"
        )
    print(json.dumps(result, indent=2))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
