"""Resumable spectra generation over many molecules: local processes or a Dask cluster.

Work unit = (component, molecule), a component of the registry `components.py`: "vib"
(GFN2-xTB IR + Raman, `vibrational.py`), "uv" (B3LYP + TDA-ris, `electronic.py`), ...
The molecules are processed in a fixed order; shard k of a component holds molecules
order[k * shard_size : (k + 1) * shard_size]. Each finished molecule is written at once
(atomic), so a crash loses only the molecules in flight; a restart skips every finished
molecule and consolidates complete shards.

Before anything is written the run is checked against the store's identity
(`identity.py`: source, shard size, settings, and each molecule by content): a run that
would make other spectra is refused, one that extends the molecule order grows the store,
and a finished shard is never rewritten with fewer molecules.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from molspectra_jax import files
from molspectra_jax.spectroscopy import components, identity
from molspectra_jax.spectroscopy.store import SpectraStore

# Recorded in every shard, with each registered component's package.
_VERSIONED_PACKAGES = ("molspectra-jax", "numpy", "scipy")
# The OpenMP/BLAS pools of tblite and PySCF: 2 threads per process measured 2x slower
# than 2 single-threaded processes on QM9-sized molecules.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """What to compute and how; recorded (with package versions) in every shard.

    Attributes:
      components: the work units' components (default: every registered one).
      shard_size: molecules per shard.
      component_settings: component -> an instance of its settings dataclass, e.g.
        {"uv": ElectronicSettings(basis="def2-svp")}; a component left out uses the
        defaults of its class.
    """

    components: tuple[str, ...] = components.names()
    shard_size: int = 100
    component_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in (*self.components, *self.component_settings):
            components.get(name)
        for name, value in self.component_settings.items():
            if not isinstance(value, components.get(name).settings_class()):
                raise ValueError(f"settings of {name!r}: {value!r} is no {name!r} settings class")

    def settings_for(self, component: str):
        """The settings dataclass instance `component` is computed with."""
        if component in self.component_settings:
            return self.component_settings[component]
        return components.get(component).settings_class()()


@dataclasses.dataclass
class Summary:
    """Outcome of one `generate` call."""

    computed: int = 0
    skipped: int = 0
    failures: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def report(self, n_components: int, skipped: Sequence[str] = ()) -> str:
        """Counts, rate, one line per failure and per `skipped` input record (unreadable,
        left out before the run), as the command prints them."""
        rate = 3600 * self.computed / max(n_components, 1) / max(self.seconds, 1e-9)
        lines = [
            f"computed {self.computed}, skipped {self.skipped} (already done), failed "
            f"{len(self.failures)} in {self.seconds:.0f} s ({rate:.0f} molecules/hour)"
        ]
        lines += [f"  FAILED {c} molecule {i}: {message}" for c, i, message in self.failures]
        lines += [f"  SKIPPED unreadable input record: {message}" for message in skipped]
        return "\n".join(lines)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in (*_VERSIONED_PACKAGES, *(c.package for c in components.COMPONENTS.values())):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def shard_metadata(component: str, settings: GenerationSettings, source: str) -> dict:
    """Method, settings, source and package versions of a component's shards."""
    detail = settings.settings_for(component)
    return {
        "component": component,
        "method": components.get(component).method(detail),
        "settings": dataclasses.asdict(detail),
        "shard_size": settings.shard_size,
        "source": source,
        "versions": package_versions(),
    }


def compute_one(
    component: str, atomic_numbers: np.ndarray, positions: np.ndarray, settings
) -> tuple[bool, dict | str]:
    """Run one work unit in a worker. Returns (True, record) or (False, error message)."""
    try:
        return True, components.get(component).record(atomic_numbers, positions, settings)
    except Exception as e:  # any failure is reported with its type, never kept silently
        return False, f"{type(e).__name__}: {e}"


def _single_thread_env() -> None:
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"


def _local_runner(workers: int) -> tuple[Callable, Callable]:
    """(submit, close) over a spawn process pool; spawned workers read the 1-thread env."""
    from concurrent.futures import ProcessPoolExecutor

    _single_thread_env()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return pool.submit, lambda: pool.shutdown(cancel_futures=True)


def _dask_runner(address: str) -> tuple[Callable, Callable]:
    """(submit, close) on a Dask cluster (`distributed.Client(address)`)."""
    from distributed import Client

    client = Client(address)
    return (lambda fn, *args: client.submit(fn, *args, pure=False)), client.close


def _wait_some(futures: set, dask: bool):
    if dask:
        from distributed import wait

        done, _ = wait(list(futures), return_when="FIRST_COMPLETED")
    else:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(futures, return_when=FIRST_COMPLETED)
    return done


def generate(
    ids: Sequence[int],
    get_molecule: Callable[[int], tuple[np.ndarray, np.ndarray]],
    out_dir: str,
    settings: GenerationSettings = GenerationSettings(),
    *,
    source: str | Mapping[str, Any] = "",
    names: Sequence[str] | None = None,
    workers: int | None = None,
    dask_scheduler: str | None = None,
    progress: bool = True,
) -> Summary:
    """Compute the missing spectra of molecules `ids` (in this order) into `out_dir`.

    Args:
      ids: [M] molecule ids (ints), the shard order; extending it later grows the store.
      get_molecule: position in `ids` -> (atomic_numbers [n], positions [n, 3] Å).
      source: where the molecules come from: a label, or {"kind", "path", "seed",
        "label"} (`data.sources.MoleculeSource.identity`); kept in store.json, the label
        in every shard's metadata.
      names: [M] record names, merged into `<out_dir>/names.json` once the run is accepted.
      workers: local processes (default: one per core); ignored with `dask_scheduler`.
      dask_scheduler: address of a running Dask scheduler, e.g. "tcp://host:8786".

    Raises:
      identity.StoreConflict: `out_dir` holds spectra of another run (source, shard size,
        settings or molecules differ); raised before anything is written.
      files.FolderInUse: another generator is writing into `out_dir`.
    """
    with files.exclusive_folder(out_dir):
        files.remove_stale_temporaries(out_dir)  # left by a killed run
        return _generate_locked(
            ids,
            get_molecule,
            out_dir,
            settings,
            source=source,
            names=names,
            workers=workers,
            dask_scheduler=dask_scheduler,
            progress=progress,
        )


def _generate_locked(
    ids, get_molecule, out_dir, settings, *, source, names, workers, dask_scheduler, progress
) -> Summary:
    """`generate`, with `out_dir` held by this process."""
    start = time.time()
    store = SpectraStore(out_dir)
    ids = [int(i) for i in ids]
    source = {"label": source} if isinstance(source, str) else dict(source)
    label = source.get("label") or ""
    requested = identity.make(
        source,
        settings.shard_size,
        {c: shard_metadata(c, settings, label) for c in settings.components},
        identity.molecule_list(ids, get_molecule),
    )
    stored = identity.check(out_dir, requested)
    identity.check_records(out_dir, ids, get_molecule)
    identity.record(out_dir, stored, requested)
    if names is not None:
        _record_names(out_dir, ids, names)
    size = settings.shard_size
    chunks = [ids[k : k + size] for k in range(0, len(ids), size)]
    summary = Summary()
    todo, remaining = [], {}
    for component in settings.components:
        meta = shard_metadata(component, settings, label)
        done = store.done_ids(component)
        for k, chunk in enumerate(chunks):
            missing = [i for i in chunk if i not in done]
            remaining[component, k] = len(missing)
            summary.skipped += len(chunk) - len(missing)
            if not missing:
                _consolidate_if_changed(store, component, k, chunk, meta)
            todo += [(component, k, i) for i in missing]
    position = {mol_id: p for p, mol_id in enumerate(ids)}
    todo.sort(key=lambda t: (position[t[2]], t[0]))  # molecule order, shards fill in order
    if not todo:
        summary.seconds = time.time() - start
        return summary

    dask = dask_scheduler is not None
    submit, close = (
        _dask_runner(dask_scheduler) if dask else _local_runner(workers or os.cpu_count())
    )
    bar = tqdm(total=len(todo), unit="task", disable=not progress, smoothing=0.05)
    in_flight, queue = {}, iter(todo)
    window = 2 * (workers or os.cpu_count() or 1) + 2
    try:
        while True:
            for task in queue:
                component, _, mol_id = task
                z, pos = get_molecule(position[mol_id])
                args = (
                    component,
                    np.asarray(z),
                    np.asarray(pos, float),
                    settings.settings_for(component),
                )
                in_flight[submit(compute_one, *args)] = task
                if len(in_flight) >= window:
                    break
            if not in_flight:
                break
            for future in _wait_some(set(in_flight), dask):
                component, k, mol_id = in_flight.pop(future)
                ok, payload = future.result()
                if ok:
                    store.save_result(component, mol_id, payload)
                else:
                    store.save_failure(component, mol_id, payload)
                    summary.failures.append((component, mol_id, payload))
                summary.computed += 1
                remaining[component, k] -= 1
                if remaining[component, k] == 0:
                    meta = shard_metadata(component, settings, label)
                    order, _ = _shard_order(store, component, k, chunks[k])
                    store.consolidate(component, k, order, meta)
                bar.update(1)
                bar.set_postfix(failed=len(summary.failures), refresh=False)
    finally:
        bar.close()
        close()
    summary.seconds = time.time() - start
    return summary


def _shard_order(store: SpectraStore, component: str, k: int, chunk) -> tuple[list[int], int]:
    """(shard k's molecules: those it holds, then the new ones of `chunk`; how many it holds).

    A chunk shorter than the shard (a run with a smaller limit) keeps every molecule."""
    shard = store.read_shard(component, k)
    held = [] if shard is None else shard["ids"].tolist() + shard["failed_ids"].tolist()
    known = set(held)
    return held + [i for i in chunk if i not in known], len(held)


def _consolidate_if_changed(store: SpectraStore, component: str, k: int, chunk, meta) -> None:
    """Write shard k if it is missing, lacks molecules of `chunk`, or has pending leftovers."""
    order, held = _shard_order(store, component, k, chunk)
    if len(order) == held and not (store.pending_ids(component) & set(order)):
        return
    store.consolidate(component, k, order, meta)


def _record_names(root: str, ids: Sequence[int], names: Sequence[str]) -> None:
    """Merge id -> name into `<root>/names.json` (names of other stored ids are kept)."""
    path = os.path.join(root, "names.json")
    known = {}
    if os.path.exists(path):
        with open(path) as f:
            known = json.load(f)
    known.update({str(int(i)): str(n) for i, n in zip(ids, names, strict=True)})
    files.write_json(path, known)
