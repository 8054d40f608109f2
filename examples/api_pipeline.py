"""The demo pipeline from Python: a dict instead of a YAML file, then the xarray accessor.

    .venv/bin/python examples/api_pipeline.py [--steps 200] [--out outputs/api]

1. ``run_pipeline(config)`` runs simulate -> preprocess -> train -> sample -> evaluate on a
   local Dask cluster, exactly as ``rho-workflow run pipelines/demo.yaml`` (the dict is the
   YAML, with a shorter training here);
2. the ``.rho`` accessor fits a model straight from an xarray Dataset of simulations and
   samples a labeled Dataset at new parameter values, in this process.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import xarray as xr
import yaml

import rho_workflow.accessor  # noqa: F401  (registers the .rho accessor)
from rho_workflow.accessor import sample_sweep
from rho_workflow.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps")
    parser.add_argument("--out", default="outputs/api", help="output folder")
    args = parser.parse_args()

    config = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    config["simulate"]["out_dir"] = f"{args.out}/simulations"
    config["data"]["files"] = f"{args.out}/simulations/*.nc"
    config["output"]["dir"] = args.out
    config["training"]["steps"] = args.steps
    results = run_pipeline(config, overwrite=True)  # a rerun replaces the last (kept in previous/)
    print("pipeline:", {k: v for k, v in results["sample"].items() if k in ("output", "n_samples")})
    with xr.open_dataset(results["sample"]["output"]) as sweep:
        print(sweep)

    # -- the accessor: Dataset of simulations -> model -> labeled sweep ---------------------
    runs = [xr.open_dataset(f) for f in sorted(glob.glob(f"{args.out}/simulations/*.nc"))[:40]]
    density = xr.concat([r["density"].isel(realization=0).assign_coords(
        index=r["density"].attrs["index"], amplitude=r["density"].attrs["amplitude"])
        for r in runs], dim="run")
    density["index"].attrs["units"] = "1"
    density["amplitude"].attrs["units"] = "Mparsec2"
    ds = density.to_dataset()
    model = ds.rho.fit("density", params=["index", "amplitude"], sample_dim="run", log=True,
                       steps=args.steps, batch_size=16, progress=False)
    new = sample_sweep(model, grid={"index": [-2.5, -1.5], "amplitude": {"values": [800000],
                                                                         "units": "kpc2"}},
                       members=2, steps=10)
    print(new)


if __name__ == "__main__":  # Dask's worker processes re-import this file
    main()
