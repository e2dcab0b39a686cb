"""Small molecules for the spectroscopy tests, embedded with RDKit (seeded)."""

import numpy as np
import pytest


def embed(smiles: str) -> tuple[np.ndarray, np.ndarray]:
    """(atomic_numbers [n], positions [n, 3] Å) of an MMFF-relaxed RDKit conformer."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    AllChem.MMFFOptimizeMolecule(mol)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return z, mol.GetConformer().GetPositions()


@pytest.fixture(scope="session")
def molecule():
    return embed
