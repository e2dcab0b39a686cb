"""Diagnostics of stage-2 pre-training runs: does the contrast generalise, is MPR a task,
how far does stage 2 move the encoder? (`molspectra_jax.diagnostics`)

  python -m benchmarks.spectra_diagnostics --stage2 workdirs/stage2 --stage1 workdirs/stage1 \
      --out benchmarks/results/diagnostics.json
"""

import json
import platform
import time

from absl import app, flags, logging

from molspectra_jax import diagnostics

_STAGE2 = flags.DEFINE_string("stage2", None, "Stage-2 pre-training workdir.", required=True)
_STAGE1 = flags.DEFINE_string("stage1", "", "Its stage-1 workdir (encoder shift, CKA).")
_N = flags.DEFINE_integer("n", 200, "Molecules per retrieval set (train, valid).")
_OUT = flags.DEFINE_string("out", "", "Write the report as JSON here.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    report = diagnostics.stage2_report(_STAGE2.value, _STAGE1.value, _N.value)
    for key, value in report.items():
        print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    if _OUT.value:
        meta = {"machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
        with open(_OUT.value, "w") as f:
            json.dump(
                {**report, "stage2": _STAGE2.value, "stage1": _STAGE1.value, **meta}, f, indent=1
            )


if __name__ == "__main__":
    app.run(main)
