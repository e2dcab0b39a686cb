"""A molecule store: millions of molecules as memory-mapped arrays, written once by a
resumable converter, opened in milliseconds.

  <root>/store.json                what it holds (written last: without it the store is
                                   incomplete and a rerun of the conversion finishes it)
  <root>/conversion.json           the conversion's identity (source file, options)
  <root>/ids.npy                   [M] int64 molecule ids (an SDF's 1-based record numbers)
  <root>/atomic_numbers.npy        [A] uint8
  <root>/positions.npy             [A, 3] float32, Å
  <root>/offsets.npy               [M + 1] int64, molecule m is offsets[m]:offsets[m + 1]
  <root>/skipped.txt               one line per record left out, naming it and why
  <root>/edge_counts/r<radius>.npy [M] int32 candidate edges per molecule (a cache)
  <root>/parts/part-<k>.npz        while converting: chunk k's molecules (removed at the end)

Conversion is a sequence of chunks (consecutive records), each parsed in a worker
process into one part file (atomic), so a killed conversion resumes where it stopped and
the store is the same whatever the worker count; the parts are then copied into the
arrays above one at a time (memory: one part).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from molspectra_jax import files
from molspectra_jax.data.records import DEFAULT_ELEMENTS, DataError, MoleculeDataset

FORMAT = 1
ARRAYS = ("ids", "atomic_numbers", "positions", "offsets")
# Candidate-edge radii counted during conversion (None: stage-1 pre-training's default,
# the 5 Å cutoff + the skin that follows its 0.04 Å noise; `batching.candidate_radius`).
DEFAULT_CUTOFF, DEFAULT_NOISE_SIGMA = 5.0, 0.04


@dataclasses.dataclass
class Summary:
    """What a conversion did: molecules stored, records skipped, chunks parsed now vs
    found done (a resumed run), seconds."""

    molecules: int = 0
    skipped: int = 0
    chunks_parsed: int = 0
    chunks_resumed: int = 0
    seconds: float = 0.0


def open_store(root: str) -> MoleculeDataset:
    """The store's molecules, arrays memory-mapped (nothing read until used)."""
    info = read_info(root)
    dataset = _map_arrays(root, store=root)
    if len(dataset) != info["molecules"] or len(dataset.positions) != info["atoms"]:
        raise DataError(f"{root}: arrays do not match store.json (the store was altered)")
    return dataset


def _map_arrays(root: str, store: str = "") -> MoleculeDataset:
    arrays = {name: np.load(os.path.join(root, f"{name}.npy"), mmap_mode="r") for name in ARRAYS}
    return MoleculeDataset(**arrays, targets=np.zeros((len(arrays["ids"]), 0)), store=store)


def read_info(root: str) -> dict:
    """store.json of a complete store; a DataError saying what to do otherwise."""
    path = os.path.join(root, "store.json")
    if not os.path.exists(path):
        why = "its conversion has not finished" if os.path.isdir(root) else "no such folder"
        raise DataError(
            f"{root}: not a complete molecule store ({why}); (re)run "
            "`python -m experiments.convert_molecules --input FILE --out FOLDER`"
        )
    with open(path) as f:
        info = json.load(f)
    if info.get("format") != FORMAT:
        raise DataError(f"{path}: store format {info.get('format')}, this version reads {FORMAT}")
    return info


def edge_counts(dataset: MoleculeDataset, radius: float) -> np.ndarray:
    """[M] candidate edges per molecule within `radius` of a store's dataset: its cache,
    or counted now (and cached when the store is writable)."""
    from molspectra_jax.data.batching import count_candidate_edges

    path = _edge_count_path(dataset.store, radius)
    if os.path.exists(path):
        counts = np.load(path)
        if counts.shape == (len(dataset),):
            return counts
    t0 = time.time()
    print(f"{dataset.store}: counting candidate edges within {radius} Å (once; then cached)")
    counts = count_candidate_edges(dataset, radius)
    print(f"counted {int(counts.sum())} candidate edges in {time.time() - t0:.1f} s")
    try:
        files.write_npy(path, counts)
    except OSError as e:
        print(f"{path}: cannot cache the counts ({e}); they will be counted again next run")
    return counts


def _edge_count_path(root: str, radius: float) -> str:
    return os.path.join(root, "edge_counts", f"r{radius:.4f}.npy")


# --- conversion --------------------------------------------------------------------------


def convert(
    root: str,
    identity: dict,
    chunks: Iterable[tuple[int, Any]],
    parse_chunk: Callable[[Any], dict],
    *,
    workers: int = 0,
    edge_radii: Sequence[float] | None = None,
    progress: bool = True,
) -> Summary:
    """Write the store `root` from `chunks`, resuming a killed conversion.

    Args:
      identity: what is converted (source file, size, options): recorded in
        conversion.json; a folder holding another conversion is refused.
      chunks: (k, payload) for k = 0, 1, ...; chunks already in parts/ are not parsed again.
      parse_chunk: payload -> {"ids" [m], "atomic_numbers" [a], "positions" [a, 3],
        "n_atoms" [m], "skipped" [s] str}; a top-level function when `workers` > 0.
      workers: processes parsing chunks (0: in this process).
      edge_radii: candidate-edge radii (Å) counted into the store's cache (None: the
        default stage-1 run's).

    Raises:
      DataError: `root` holds another conversion.
      files.FolderInUse: another conversion is writing `root`.
    """
    with files.exclusive_folder(root):
        files.remove_stale_temporaries(root)  # left by a killed run
        _claim(root, identity)
        summary = Summary()
        start = time.time()
        if not os.path.exists(os.path.join(root, "store.json")):
            _parse_missing(root, chunks, parse_chunk, workers, summary, progress)
            _assemble(root, identity, edge_radii, progress)
        shutil.rmtree(os.path.join(root, "parts"), ignore_errors=True)
        info = read_info(root)
        summary.molecules, summary.skipped = info["molecules"], info["skipped"]
        summary.seconds = time.time() - start
        return summary


def _claim(root: str, identity: dict) -> None:
    """Record `identity` in conversion.json, or check it against the one there."""
    path = os.path.join(root, "conversion.json")
    identity = json.loads(json.dumps(identity, sort_keys=True))  # as it reads back
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if stored != identity:
            keys = sorted(set(stored) | set(identity))
            diff = [
                f"{k}: {stored.get(k)!r} there, {identity.get(k)!r} now"
                for k in keys
                if stored.get(k) != identity.get(k)
            ]
            diff = "; ".join(diff)
            raise DataError(f"{root} holds another conversion ({diff}); use another --out")
        return
    files.write_json(path, identity)


def _part_path(root: str, k: int) -> str:
    return os.path.join(root, "parts", f"part-{k:06d}.npz")


def _parse_missing(root, chunks, parse_chunk, workers, summary, progress) -> None:
    """Parse every chunk without a part file into one, `workers` processes at a time."""
    bar = tqdm(unit="mol", disable=not progress, smoothing=0.05, desc="converting")
    pool = None
    if workers > 0:  # spawned: the caller may hold threads (JAX) that fork would copy
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    in_flight: dict = {}

    def finish(future, k) -> None:
        part = future.result() if pool else future
        files.write_npz(_part_path(root, k), _checked_part(part, k), compress=False)
        summary.chunks_parsed += 1
        bar.update(len(part["ids"]) + len(part["skipped"]))

    try:
        for k, payload in chunks:
            if os.path.exists(_part_path(root, k)):
                summary.chunks_resumed += 1
                continue
            if pool is None:
                finish(parse_chunk(payload), k)
                continue
            in_flight[pool.submit(parse_chunk, payload)] = k
            if len(in_flight) >= 2 * workers:  # bounded: chunks are read lazily
                done, _ = concurrent.futures.wait(in_flight, return_when="FIRST_COMPLETED")
                for future in done:
                    finish(future, in_flight.pop(future))
        for future in concurrent.futures.as_completed(list(in_flight)):
            finish(future, in_flight.pop(future))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _checked_part(part: dict, k: int) -> dict:
    n_atoms = np.asarray(part["n_atoms"], np.int64)
    if len(n_atoms) != len(part["ids"]) or n_atoms.sum() != len(part["atomic_numbers"]):
        raise ValueError(f"chunk {k}: n_atoms do not match its ids and atoms")
    return {
        "ids": np.asarray(part["ids"], np.int64),
        "atomic_numbers": np.asarray(part["atomic_numbers"], np.uint8),
        "positions": np.asarray(part["positions"], np.float32).reshape(-1, 3),
        "n_atoms": n_atoms,
        "skipped": np.asarray(part["skipped"], dtype=str),
    }


def _assemble(
    root: str, identity: dict, edge_radii: Sequence[float] | None, progress: bool
) -> None:
    """Copy the parts, in chunk order, into the store's arrays; store.json last."""
    parts = sorted(p for p in os.listdir(os.path.join(root, "parts")) if p.endswith(".npz"))
    expected = [os.path.basename(_part_path(root, k)) for k in range(len(parts))]
    if parts != expected:
        raise DataError(f"{root}/parts: chunks {sorted(set(expected) - set(parts))[:5]} missing")
    part_paths = [os.path.join(root, "parts", p) for p in parts]
    n_atoms = [np.load(p)["n_atoms"] for p in part_paths]
    m, a = sum(len(n) for n in n_atoms), int(sum(n.sum() for n in n_atoms))
    if m == 0:
        raise DataError(f"{identity.get('source', root)}: no usable molecules")
    shapes = {"ids": ((m,), np.int64), "atomic_numbers": ((a,), np.uint8)}
    shapes["positions"] = ((a, 3), np.float32)
    skipped = []
    outputs = {name: os.path.join(root, f"{name}.npy") for name in shapes}
    with files.new_npy_memmaps({outputs[k]: v for k, v in shapes.items()}) as maps:
        out = {name: maps[path] for name, path in outputs.items()}
        mol = atom = 0
        for path in tqdm(part_paths, desc="assembling", unit="part", disable=not progress):
            with np.load(path) as part:
                dm, da = len(part["ids"]), len(part["atomic_numbers"])
                out["ids"][mol : mol + dm] = part["ids"]
                out["atomic_numbers"][atom : atom + da] = part["atomic_numbers"]
                out["positions"][atom : atom + da] = part["positions"]
                skipped += part["skipped"].tolist()
            mol, atom = mol + dm, atom + da
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(n_atoms))]).astype(np.int64)
    files.write_npy(os.path.join(root, "offsets.npy"), offsets)
    with files.atomic_open(os.path.join(root, "skipped.txt"), "w") as f:
        f.writelines(line.replace("\n", " ") + "\n" for line in skipped)
    molecules = _map_arrays(root, store=root)
    if edge_radii is None:
        from molspectra_jax.data.batching import candidate_radius

        edge_radii = (candidate_radius(DEFAULT_CUTOFF, None, DEFAULT_NOISE_SIGMA),)
    for radius in edge_radii:  # into the cache the first run would otherwise fill
        edge_counts(molecules, radius)
    info = {"format": FORMAT, "molecules": m, "atoms": a, "skipped": len(skipped)}
    files.write_json(os.path.join(root, "store.json"), {**info, "conversion": identity})


# --- SDF files (PCQM4Mv2's release layout) -----------------------------------------------


def sdf_chunks(path: str, chunk_size: int, limit: int | None = None) -> Iterator[tuple[int, tuple]]:
    """(k, (path, first record number, record texts)) for consecutive chunks of an SDF,
    read line by line (memory: one chunk); `limit` stops after that many records."""
    blocks, lines, number = [], [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            lines.append(line)
            if line.startswith("$$$$"):
                blocks.append("".join(lines))
                lines, number = [], number + 1
                if len(blocks) == chunk_size:
                    yield (number - 1) // chunk_size, (path, number - len(blocks) + 1, blocks)
                    blocks = []
                if limit is not None and number >= limit:
                    break
    if any(line.strip() for line in lines) and (limit is None or number < limit):
        blocks.append("".join(lines))  # a last record without its "$$$$"
        number += 1
    if blocks:
        yield (number - 1) // chunk_size, (path, number - len(blocks) + 1, blocks)


def parse_sdf_chunk(payload: tuple) -> dict:
    """A chunk of `sdf_chunks` -> part arrays; heavy-atom records get RDKit's hydrogens
    (`AddHs(addCoords=True)`), as stage 1 reads SDF files."""
    from molspectra_jax.data.molfiles import read_sdf_blocks

    path, first, blocks, elements = payload
    records, skipped = read_sdf_blocks(path, first, blocks, add_hydrogens=True, elements=elements)
    return _pack(records, skipped)


def _pack(records, skipped) -> dict:
    return {
        "ids": np.array([r.number for r in records], np.int64),
        "atomic_numbers": np.concatenate([r.atomic_numbers for r in records] or [np.zeros(0)]),
        "positions": np.concatenate([r.positions for r in records] or [np.zeros((0, 3))]),
        "n_atoms": np.array([len(r.atomic_numbers) for r in records], np.int64),
        "skipped": np.array(skipped, dtype=str),
    }


def convert_sdf(
    path: str,
    root: str,
    *,
    chunk_size: int = 10_000,
    workers: int = 0,
    limit: int | None = None,
    elements: Sequence[int] = DEFAULT_ELEMENTS,
    progress: bool = True,
) -> Summary:
    """An SDF file (e.g. PCQM4Mv2's `pcqm4m-v2-train.sdf`) -> the store `root`; ids are
    1-based record numbers, records that cannot be modelled are skipped and listed."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    identity = {
        "source": os.path.abspath(path),
        "bytes": os.path.getsize(path),
        "kind": "sdf",
        "hydrogens": "added (RDKit AddHs, addCoords)",
        "elements": list(elements),
        "chunk_size": chunk_size,
        "limit": limit,
    }
    chunks = (
        (k, (*payload, tuple(elements))) for k, payload in sdf_chunks(path, chunk_size, limit)
    )
    return convert(root, identity, chunks, parse_sdf_chunk, workers=workers, progress=progress)
