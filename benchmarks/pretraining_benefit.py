"""Do spectra help? A paired comparison of initialisations for fine-tuning one QM9 target.

  python -m benchmarks.pretraining_benefit --workdir workdirs/benefit --seeds 0,1,2,3,4

The defaults are the README's run: about an hour on a 2-core CPU (ET 64x3, batch 32).

Arms (`--arms`):
- `scratch`: random initialisation;
- `denoising`: stage 1 only (Coord's denoising on QM9 geometries);
- `full`: stage 1 + stage 2 (denoising + MPR + contrast on UV, IR and Raman);
- `no_uv`, `no_ir`, `no_raman`: stage 2 without that spectrum (the paper's Table 7);
- `aux`: random initialisation, fine-tuned with MPR + contrast as auxiliary losses
  next to the property loss (the paper's Table 1 "w/ spectra").

Pairing: every arm fine-tunes on the same molecules (shipped spectra molecules, so that
`aux` has spectra: `--n_test` test, `--n_valid` valid, the first `--n_train` of the
rest to train), with the same model, budget, noisy nodes (all arms) and fine-tuning
seeds; seed s shuffles the batches and initialises the heads alike in every arm. No
pre-training sees a fine-tuning valid or test molecule: stage 1 trains on every other
QM9 molecule, stage 2 on every other shipped spectra molecule (`--n_stage2_valid` of
them held out for the diagnostics). Each run has its own folder and is skipped when
done, so an interrupted comparison resumes.

Writes `<workdir>/comparison.json`: per arm the test MAEs by seed, mean and 95%
confidence interval (t, n - 1 df), and the paired difference from `denoising` with its
interval (`molspectra_jax.stats`);
the diagnostics of each stage-2 run (`molspectra_jax.diagnostics`); and the wall time.
"""

import json
import os
import platform
import time

import numpy as np
from absl import app, flags, logging

from molspectra_jax.configs import finetune_qm9, pretrain_qm9s
from molspectra_jax.data import sources
from molspectra_jax.spectroscopy.embedded import load_embedded_spectra

ARMS = ("scratch", "denoising", "full", "no_uv", "no_ir", "no_raman", "aux")
STAGE2_SPECTRA = {  # arm -> the spectra its stage 2 pre-trains on
    "full": ("uv", "ir", "raman"),
    "no_uv": ("ir", "raman"),
    "no_ir": ("uv", "raman"),
    "no_raman": ("uv", "ir"),
}

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/benefit", "Run folder.")
_ARMS = flags.DEFINE_list("arms", list(ARMS), f"Arms, of {list(ARMS)}.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Fine-tuning seeds.")
_TARGET = flags.DEFINE_string("target", "gap", "QM9 target.")
_N_TRAIN = flags.DEFINE_integer("n_train", 1000, "Labelled fine-tuning molecules.")
_N_VALID = flags.DEFINE_integer("n_valid", 300, "Fine-tuning validation molecules.")
_N_TEST = flags.DEFINE_integer("n_test", 1000, "Fine-tuning test molecules.")
_N_STAGE2_VALID = flags.DEFINE_integer("n_stage2_valid", 100, "Stage-2 held-out molecules.")
_STAGE1 = flags.DEFINE_integer("stage1_steps", 1500, "Denoising pre-training steps.")
_STAGE2 = flags.DEFINE_integer("stage2_steps", 400, "Spectra pre-training steps.")
_FINETUNE = flags.DEFINE_integer("finetune_steps", 300, "Fine-tuning steps per run.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size of every run.")
_HIDDEN = flags.DEFINE_integer("hidden", 64, "ET width (model.hidden).")
_LAYERS = flags.DEFINE_integer("layers", 3, "ET layers.")
_NOISE_WEIGHT = flags.DEFINE_float("noise_weight", 0.1, "Noisy nodes in fine-tuning.")
_SPLIT_SEED = flags.DEFINE_integer("split_seed", 0, "Seed of the fine-tuning split.")


def _sized(c):
    """The comparison's model and batch on any config."""
    c.model.update(hidden=_HIDDEN.value, num_layers=_LAYERS.value, num_heads=4, num_rbf=32)
    c.data.batch_size = _BATCH.value
    return c


def _loop(c, steps: int, evaluations: int = 1):
    c.train.update(
        num_steps=steps,
        eval_every=max(steps // evaluations, 1),
        checkpoint_every=max(steps // evaluations, 1),
        log_every=max(steps // 20, 1),
        progress_bar=False,
    )
    c.optim.warmup_steps = max(steps // 10, 1)
    return c


def write_splits(root: str) -> dict[str, str]:
    """The three split files (TorchMD-Net layout) every run reads, by rows of its data:
    fine-tuning (spectra molecules), stage 1 (QM9) and stage 2 (spectra molecules)."""
    spectra_ids = load_embedded_spectra().ids  # the with_spectra / stage-2 row order
    rng = np.random.default_rng(_SPLIT_SEED.value)
    order = rng.permutation(len(spectra_ids))
    test, valid = order[: _N_TEST.value], order[_N_TEST.value : _N_TEST.value + _N_VALID.value]
    rest = order[_N_TEST.value + _N_VALID.value :]
    if _N_TRAIN.value > len(rest) or len(rest) <= _N_STAGE2_VALID.value:
        raise ValueError(f"{len(spectra_ids)} spectra molecules cannot split as asked")
    held_out_ids = set(spectra_ids[np.concatenate([test, valid])].tolist())
    c = finetune_qm9.get_config()
    qm9_ids = sources.load("qm9", c.data).ids
    qm9_order = rng.permutation(len(qm9_ids))
    qm9_rest = qm9_order[~np.isin(qm9_ids[qm9_order], list(held_out_ids))]
    none = np.zeros(0, np.int64)
    paths = {k: os.path.join(root, f"splits_{k}.npz") for k in ("finetune", "stage1", "stage2")}
    parts = {
        "finetune": {"train": rest[: _N_TRAIN.value], "valid": valid, "test": test},
        "stage1": {"train": qm9_rest[1000:], "valid": qm9_rest[:1000], "test": none},
        "stage2": {
            "train": rest[_N_STAGE2_VALID.value :],
            "valid": rest[: _N_STAGE2_VALID.value],
            "test": none,
        },
    }
    for name, path in paths.items():
        if not os.path.exists(path):
            sources.write_split_file(path, parts[name])
    return paths


def pretrain_config(stage: int, split_file: str, init_from: str = "", spectra=()):
    c = _sized(pretrain_qm9s.get_config("cpu"))
    c.stage, c.init_from = stage, init_from
    c.data.source = "qm9"
    c.data.split_file, c.data.n_train = split_file, -1
    if spectra:
        c.specformer.spectra = tuple(spectra)
    return _loop(c, _STAGE1.value if stage == 1 else _STAGE2.value)


def finetune_config(arm: str, seed: int, split_file: str, init_from: str):
    c = _sized(finetune_qm9.get_config("cpu"))
    c.target, c.seed, c.init_from = _TARGET.value, seed, init_from
    c.data.shuffle_seed = seed
    c.data.with_spectra, c.data.split_file = True, split_file
    c.data.n_train = c.data.n_valid = c.data.n_test = -1  # the split file's
    c.loss.noise_weight = _NOISE_WEIGHT.value
    if arm == "aux":
        c.spectra_aux.update(mpr=1.0, contrast=1.0)
    return _loop(c, _FINETUNE.value, evaluations=5)


def table(summary: dict, unit: str) -> str:
    lines = [
        f"| arm | seeds | test MAE ({unit}) | 95% CI | minus denoising | 95% CI |",
        "|---|---|---|---|---|---|",
    ]
    fmt = lambda ci: f"{ci[0]:.1f} .. {ci[1]:.1f}" if ci else "-"  # noqa: E731
    for arm, r in summary.items():
        diff = f"{r['diff']:+.1f}" if "diff" in r else "-"
        lines.append(
            f"| {arm} | {len(r['values'])} | {r['mean']:.1f} | {fmt(r['ci95'])} | {diff} | "
            f"{fmt(r.get('diff_ci95'))} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from molspectra_jax import diagnostics, stats
    from molspectra_jax.train import finetune, pretrain

    unknown = sorted(set(_ARMS.value) - set(ARMS))
    if unknown:
        raise app.UsageError(f"unknown arms {unknown}; choose from {list(ARMS)}")
    root, start = _WORKDIR.value, time.time()
    os.makedirs(root, exist_ok=True)
    splits = write_splits(root)
    init = {"scratch": "", "aux": ""}
    stage1 = os.path.join(root, "stage1")
    if set(_ARMS.value) - {"scratch", "aux"}:
        print(f"stage 1 ({_STAGE1.value} steps) -> {stage1}", flush=True)
        pretrain.train_and_evaluate(pretrain_config(1, splits["stage1"]), stage1)
        init["denoising"] = stage1
    diagnosed = {}
    for arm in (a for a in _ARMS.value if a in STAGE2_SPECTRA):
        path = os.path.join(root, f"stage2_{arm}")
        print(f"stage 2 {arm} ({_STAGE2.value} steps) -> {path}", flush=True)
        config = pretrain_config(2, splits["stage2"], stage1, STAGE2_SPECTRA[arm])
        pretrain.train_and_evaluate(config, path)
        init[arm] = path
        diagnosed[arm] = diagnostics.stage2_report(path, stage1, n=_N_STAGE2_VALID.value)
    maes, seeds = {}, [int(s) for s in _SEEDS.value]
    unit = sources.resolve("qm9")[0].units[_TARGET.value]  # what results.json holds
    for seed in seeds:  # seeds outer: an interrupted run still has complete pairs
        for arm in _ARMS.value:
            path = os.path.join(root, f"{arm}_seed{seed}")
            done = os.path.join(path, "results.json")
            if not os.path.exists(done):
                print(f"fine-tune {arm} seed {seed} -> {path}", flush=True)
                finetune.train_and_evaluate(
                    finetune_config(arm, seed, splits["finetune"], init[arm]), path
                )
            with open(done) as f:
                maes.setdefault(arm, []).append(json.load(f)["test_mae"][_TARGET.value])
            summary = stats.paired_summary(maes, "denoising")
            result = {
                "target": _TARGET.value,
                "unit": unit,
                "settings": {name: flags.FLAGS[name].value for name in sorted(_SETTINGS)},
                "results": summary,
                "diagnostics": diagnosed,
                "wall_seconds": round(time.time() - start, 1),
                "machine": platform.machine(),
                "date": time.strftime("%Y-%m-%d"),
            }
            with open(os.path.join(root, "comparison.json"), "w") as f:
                json.dump(result, f, indent=1)
    print(table(stats.paired_summary(maes, "denoising"), unit))
    for arm, report in diagnosed.items():
        print(arm, json.dumps({k: v for k, v in report.items() if k != "spectra"}))


_SETTINGS = {
    "arms", "seeds", "n_train", "n_valid", "n_test", "n_stage2_valid", "stage1_steps",
    "stage2_steps", "finetune_steps", "batch_size", "hidden", "layers", "noise_weight",
    "split_seed",
}  # fmt: skip


if __name__ == "__main__":
    app.run(main)
