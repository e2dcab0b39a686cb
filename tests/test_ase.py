"""`molspectra_jax.ase.Calculator`: an MD17 energy+force model drives ASE. Forces are
-dE/dx (finite differences), BFGS lowers the energy, NVE conserves it, and a run
compiles once per size bucket."""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("ase")
from ase import Atoms, units  # noqa: E402
from ase.optimize import BFGS  # noqa: E402

import molspectra_jax  # noqa: E402
from molspectra_jax.ase import (  # noqa: E402
    Calculator,
    bucket_budget,
    energy_unit_in_ev,
    run_nve,
)
from molspectra_jax.configs import finetune_md17  # noqa: E402
from molspectra_jax.data import md17  # noqa: E402
from molspectra_jax.train import finetune  # noqa: E402
from molspectra_jax.train.checkpoint import CheckpointError  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A short MD17 ethanol energy+force fine-tuning run (kcal/mol), loaded."""
    workdir = tmp_path_factory.mktemp("md17")
    c = finetune_md17.get_config("cpu")
    c.model.update(hidden=32, num_layers=2, num_heads=4)
    c.data.update(n_train=200, n_valid=20, n_test=20)
    c.optim.warmup_steps = 10
    c.train.update(num_steps=60, eval_every=60, checkpoint_every=60, progress_bar=False)
    finetune.train_and_evaluate(c, str(workdir))
    return molspectra_jax.load(str(workdir))


@pytest.fixture
def ethanol():
    frames = md17.load_md17(md17.shipped_md17_path())
    return Atoms(numbers=frames.atomic_numbers[:9], positions=frames.positions[:9])


def test_energy_is_the_models_prediction_in_ev(model, ethanol):
    ethanol.calc = Calculator(model=model)
    predicted = model.predict([_record(ethanol)])
    kcal = energy_unit_in_ev("kcal/mol")
    assert ethanol.get_potential_energy() == pytest.approx(predicted["energy"][0] * kcal, rel=1e-6)
    # float32 sums in another order (another padding): 1e-4 eV/Å on forces of ~0.5
    np.testing.assert_allclose(ethanol.get_forces(), predicted["forces"] * kcal, atol=1e-4)


def test_forces_are_minus_the_energy_gradient(model, ethanol):
    calc = Calculator(model=model)
    forces = calc.energy_and_forces(ethanol.numbers, ethanol.positions)[1]
    h = 1e-3  # Å (a barely trained PES curves fast: larger steps see the curvature)
    for atom, axis in [(0, 0), (2, 1), (5, 2), (8, 0)]:
        shifted = []
        for sign in (1, -1):
            r = ethanol.positions.copy()
            r[atom, axis] += sign * h
            shifted.append(calc.energy_and_forces(ethanol.numbers, r)[0])
        numeric = -(shifted[0] - shifted[1]) / (2 * h)
        assert numeric == pytest.approx(forces[atom, axis], rel=2e-2, abs=2e-3)


def test_bfgs_lowers_the_energy(model, ethanol):
    ethanol.positions += np.random.default_rng(0).normal(0, 0.05, ethanol.positions.shape)
    ethanol.calc = Calculator(model=model)
    before = ethanol.get_potential_energy()
    BFGS(ethanol, logfile=None).run(fmax=0.05, steps=30)
    assert ethanol.get_potential_energy() < before - 1e-3


def test_nve_conserves_energy_and_compiles_once(model, ethanol):
    calc = Calculator(model=model)
    calc.energy_and_forces(ethanol.numbers, ethanol.positions)
    programs = model.predict_fn._cache_size()
    nve = run_nve(ethanol, calc, steps=400, timestep_fs=0.25, temperature=300.0, seed=0)
    # Velocity Verlet over 100 fs: the total energy stays within 1% of the initial
    # kinetic energy (3/2 kT per atom; measured ~0.1%).
    assert nve["max_abs_excursion_eV_per_atom"] < 0.01 * 1.5 * units.kB * 300
    assert model.predict_fn._cache_size() == programs  # 400 geometries, one program
    methanol = Atoms("COH4", positions=_methanol())
    calc.energy_and_forces(methanol.numbers, methanol.positions)
    assert model.predict_fn._cache_size() == programs + 1  # a second size bucket


def test_buckets_round_atoms_up():
    assert bucket_budget(9, 8)[0] == 16 and bucket_budget(8, 8)[0] == 8
    slots, budget = bucket_budget(21, 8)
    assert slots == 24 and budget.edges == 24 * 23 + 2 and budget.atoms == 25


def test_refuses_what_it_cannot_compute(model, ethanol):
    no_forces = model.config.copy_and_resolve_references()
    no_forces.loss.force_weight = 0.0
    with pytest.raises(CheckpointError, match="not an energy with forces"):
        Calculator(model=dataclasses.replace(model, config=no_forces))
    ethanol.pbc, ethanol.cell = True, [10.0, 10.0, 10.0]
    ethanol.calc = Calculator(model=model)
    with pytest.raises(ValueError, match="periodic cells are not supported"):
        ethanol.get_potential_energy()
    with pytest.raises(ValueError, match="no eV conversion"):
        energy_unit_in_ev("furlong")


def _record(atoms):
    from molspectra_jax.data.records import MoleculeRecord

    return MoleculeRecord("ethanol", atoms.numbers.astype(np.int32), atoms.positions)


def _methanol():
    return [
        [0.0, 0.0, 0.0],
        [1.42, 0.0, 0.0],
        [1.75, 0.9, 0.0],
        [-0.36, 1.03, 0.0],
        [-0.36, -0.51, 0.89],
        [-0.36, -0.51, -0.89],
    ]
