"""NVE energy conservation of a trained energy+force model driving ASE.

  python -m benchmarks.nve_drift --workdir workdirs/md17 --out benchmarks/results/nve.json

Velocity Verlet from the first frame of the shipped MD17 ethanol sample (or `--input`,
an .xyz), Maxwell-Boltzmann velocities at `--temperature`, `--steps` steps of
`--timestep` fs. Reports the total energy's largest excursion and its drift (least-
squares slope) per atom, the kinetic temperature, the compiled programs and the wall
time per step (a force call each).
"""

import json
import platform
import time
import warnings

import numpy as np
from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "An energy+force fine-tuning workdir.")
_INPUT = flags.DEFINE_string("input", "", ".xyz start geometry (default: MD17 ethanol frame 0).")
_STEPS = flags.DEFINE_integer("steps", 4000, "Velocity Verlet steps.")
_TIMESTEP = flags.DEFINE_float("timestep", 0.25, "fs.")
_TEMPERATURE = flags.DEFINE_float("temperature", 300.0, "K, of the initial velocities.")
_SEED = flags.DEFINE_integer("seed", 0, "Velocity seed.")
_OUT = flags.DEFINE_string("out", "", "Write the result as JSON here.")


def start_geometry(path: str):
    """ase.Atoms of `path` (.xyz) or of the shipped MD17 sample's first frame."""
    from ase import Atoms
    from ase.io import read

    if path:
        return read(path)
    from molspectra_jax.data import md17

    frames = md17.load_md17(md17.shipped_md17_path())
    n = int(frames.n_atoms[0])
    return Atoms(numbers=frames.atomic_numbers[:n], positions=frames.positions[:n])


def run_nve(atoms, calc, steps: int, timestep_fs: float, temperature: float, seed: int) -> dict:
    """Velocity Verlet of `atoms` under `calc`; the energy conservation summary."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    atoms.calc = calc
    with warnings.catch_warnings():  # ASE 3.29 renames it (thermalize_momenta); 3.23 lacks that
        warnings.simplefilter("ignore", DeprecationWarning)
        rng = np.random.default_rng(seed)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs, logfile=None)
    total, kinetic_t = [], []

    def record():
        total.append(atoms.get_total_energy())
        kinetic_t.append(atoms.get_temperature())

    dyn.attach(record, interval=1)
    t0 = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - t0
    total = np.asarray(total)
    n, t_ps = len(atoms), np.arange(len(total)) * timestep_fs / 1000.0
    excursion = total - total[0]
    return {
        "atoms": n,
        "steps": steps,
        "timestep_fs": timestep_fs,
        "simulated_ps": steps * timestep_fs / 1000.0,
        "initial_temperature_K": temperature,
        "mean_temperature_K": float(np.mean(kinetic_t)),
        "max_abs_excursion_eV_per_atom": float(np.abs(excursion).max() / n),
        "drift_eV_per_atom_per_ps": float(np.polyfit(t_ps, total, 1)[0] / n),
        "wall_s_per_step": wall / steps,
    }


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs the checkpoint read at INFO
    from molspectra_jax.ase import Calculator

    calc = Calculator(_WORKDIR.value)
    atoms = start_geometry(_INPUT.value)
    result = run_nve(atoms, calc, _STEPS.value, _TIMESTEP.value, _TEMPERATURE.value, _SEED.value)
    result.update(
        workdir=_WORKDIR.value,
        programs=calc.model.predict_fn._cache_size(),
        machine=f"{platform.processor() or platform.machine()}, {platform.node()}",
        date=time.strftime("%Y-%m-%d"),
    )
    print(json.dumps(result, indent=1))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
