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

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "An energy+force fine-tuning workdir.")
_INPUT = flags.DEFINE_string("input", "", ".xyz start geometry (default: MD17 ethanol frame 0).")
_STEPS = flags.DEFINE_integer("steps", 4000, "Velocity Verlet steps.")
_TIMESTEP = flags.DEFINE_float("timestep", 0.25, "fs.")
_TEMPERATURE = flags.DEFINE_float("temperature", 300.0, "K, of the initial velocities.")
_SEED = flags.DEFINE_integer("seed", 0, "Velocity seed.")
_OUT = flags.DEFINE_string("out", "", "Write the result as JSON here.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs the checkpoint read at INFO
    from molspectra_jax.ase import Calculator, run_nve, start_geometry

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
