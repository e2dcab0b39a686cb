"""An ASE calculator from any energy (+ force) workdir: `Calculator(workdir)`.

  from molspectra_jax.ase import Calculator
  atoms.calc = Calculator("workdirs/md17_ethanol")
  atoms.get_potential_energy(), atoms.get_forces()   # eV, eV/Å

Energies are the model's target 0 converted from its unit (`model.units`) to eV;
forces are -dE/dR of that energy (eV/Å), as the model was trained. Each call packs the
one molecule into a budget of its size bucket (atoms rounded up to `bucket`, every
ordered pair a candidate edge, cut to the cutoff inside the model), so an MD run or an
optimisation compiles once per bucket, never per step. Molecules only: periodic cells
are refused.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

try:
    from ase.calculators.calculator import Calculator as _AseCalculator
    from ase.calculators.calculator import all_changes
except ImportError as e:  # pragma: no cover - ase is the optional `[ase]` extra
    raise ImportError("molspectra_jax.ase needs ASE: pip install 'molspectra-jax[ase]'") from e

import jax
import jax.numpy as jnp

from molspectra_jax.data import md17
from molspectra_jax.data.batching import Budget, CandidateEdges, collate
from molspectra_jax.data.records import MoleculeRecord, check_molecule, from_records
from molspectra_jax.inference import Model, load
from molspectra_jax.train.checkpoint import CheckpointError

# One unit of each energy unit a source declares, in eV (CODATA 2018 via ASE's values).
EV_PER = {
    "eV": 1.0,
    "meV": 1e-3,
    "Hartree": 27.211386245988,
    "Ha": 27.211386245988,
    "kcal/mol": 0.0433641042,
    "kJ/mol": 0.0103642688,
}


def energy_unit_in_ev(unit: str) -> float:
    """eV per one `unit` (e.g. 'kcal/mol'); a clear error for a unit it does not know."""
    if unit not in EV_PER:
        raise ValueError(f"energy unit {unit!r} has no eV conversion; known: {sorted(EV_PER)}")
    return EV_PER[unit]


def bucket_budget(n_atoms: int, bucket: int) -> tuple[int, Budget]:
    """(slots, budget) of one molecule of `n_atoms` atoms: atoms rounded up to a multiple
    of `bucket`, every ordered pair of those slots an edge (plus the padding graph's atom
    and two padding edges)."""
    slots = bucket * math.ceil(n_atoms / bucket)
    return slots, Budget(n_shards=1, graphs=2, atoms=slots + 1, edges=slots * (slots - 1) + 2)


class Calculator(_AseCalculator):
    """ASE calculator of an energy (+ forces) model: `Calculator(workdir)` or
    `Calculator(model=molspectra_jax.load(workdir))`.

    `bucket`: molecules are padded to a multiple of this many atoms; one compiled
    program per bucket serves every geometry of every molecule of that size.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, workdir: str | None = None, *, model: Model | None = None, bucket=8, **kw):
        super().__init__(**kw)
        if (workdir is None) == (model is None):
            raise ValueError("give a workdir or a loaded model, not both")
        self.model = load(workdir) if model is None else model
        if not self.model.forces:
            raise CheckpointError(
                f"{workdir or 'the model'}: predicts {list(self.model.targets)}, not an "
                "energy with forces (fine-tune with loss.force_weight > 0, e.g. finetune_md17)"
            )
        self.bucket = int(bucket)
        target = self.model.targets[0]
        self.ev = energy_unit_in_ev(self.model.units[target])

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise ValueError(
                f"{self.atoms.get_chemical_formula()}: periodic cells are not supported "
                f"(pbc={self.atoms.pbc.tolist()}); the model was trained on molecules"
            )
        energy, forces = self.energy_and_forces(self.atoms.numbers, self.atoms.positions)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}

    def energy_and_forces(self, atomic_numbers, positions) -> tuple[float, np.ndarray]:
        """(energy eV, forces [n, 3] eV/Å) of one molecule."""
        z = np.asarray(atomic_numbers, np.int32)
        r = np.asarray(positions, np.float64)
        name = "ase.Atoms"
        check_molecule(name, name, z, r, elements=self.model.config.data.elements)
        dataset = from_records([MoleculeRecord(name, z, r.astype(np.float32))])
        _, budget = bucket_budget(len(z), self.bucket)
        edges = CandidateEdges(np.array([len(z) * (len(z) - 1)]), self.model.config.model.cutoff)
        batch = collate(dataset, edges, [np.array([0])], budget)
        out = self.model.predict_fn(self.model.params, jax.tree.map(jnp.asarray, batch))
        offset = self.model.offsets(dataset)[0, 0]
        energy = float(np.asarray(out["properties"][0, 0, 0], np.float64) + offset)
        forces = np.asarray(out["forces"][0, : len(z)], np.float64)
        return energy * self.ev, forces * self.ev


def start_geometry(path: str = ""):
    """ase.Atoms of `path` (.xyz) or of the shipped MD17 sample's first frame."""
    from ase import Atoms
    from ase.io import read

    if path:
        return read(path)

    frames = md17.load_md17(md17.shipped_md17_path())
    n = int(frames.n_atoms[0])
    return Atoms(numbers=frames.atomic_numbers[:n], positions=frames.positions[:n])


def run_nve(atoms, calc, steps: int, timestep_fs: float, temperature: float, seed: int) -> dict:
    """Velocity Verlet of `atoms` under `calc` from Maxwell-Boltzmann velocities (no net
    momentum): the total energy's largest excursion and least-squares drift per atom,
    the mean kinetic temperature and the wall time per step."""
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
