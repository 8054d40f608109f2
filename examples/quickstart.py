"""The Python API end to end: learn lognormal density fields as a function of (index, amplitude).

Generates 2D lognormal fields with power-law spectra P(k) = A (k/k_pivot)^n on a 100 Mpc box,
trains a conditional diffusion model on a Latin hypercube of parameter values (the design of
``rho-workflow make-data``; a coarse grid leaves the model little to interpolate from, see
bench/sampler_nfe.py), samples at a training value and at an interior value never seen in
training, compares power spectra with fresh true fields there, and writes a plot, a netCDF
file of the samples and a JSON summary.

    .venv/bin/python examples/quickstart.py --out outputs/quickstart [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

from rho_workflow.api import RhoModel
from rho_workflow.data import synthetic
from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS
from rho_workflow.evaluate.plots import plot_field_gallery, plot_spectra
from rho_workflow.evaluate.spectra import power_spectrum, spectrum_error

KIND = "lognormal-field"


def true_fields(point: dict, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([synthetic.generate(KIND, point, size=32, rng=rng)[0] for _ in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/quickstart")
    ap.add_argument("--steps", type=int, default=1500, help="training steps")
    ap.add_argument("--design-points", type=int, default=72, help="parameter values of the Latin hypercube")
    ap.add_argument("--per-point", type=int, default=3, help="training fields per parameter value")
    ap.add_argument("--samples", type=int, default=32, help="generated fields per evaluation point")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = synthetic.field_spec(KIND, 32)
    box = synthetic.BOX_SIZE_MPC

    points = synthetic.default_points(KIND, args.design_points, np.random.default_rng(0))
    fields = np.concatenate([true_fields(p, args.per_point, seed=i) for i, p in enumerate(points)])
    train_points = [p for p in points for _ in range(args.per_point)]
    model = RhoModel.create((32, 32), spec.param_space(), encoder="features",
                            metadata={"field": spec.name, "units": spec.units})
    print(f"training a {model.n_parameters / 1e6:.2f}M-parameter U-Net on {len(fields)} fields "
          f"for {args.steps} steps")
    t0 = time.perf_counter()
    result = model.fit(fields, train_points, transform="log-standardize", steps=args.steps,
                       batch_size=32, lr=1e-3, warmup_steps=100)
    print(f"trained in {time.perf_counter() - t0:.0f} s ({result.samples_per_second:.0f} samples/s); "
          f"final loss {np.mean(result.losses[-50:]):.4f}")
    model.save(out / "model.pt")

    evaluation = {"seen": points[0], "unseen": {"index": -1.75, "amplitude": 1.5}}
    summary, spectra, gallery, titles, arrays = {}, {}, [], [], []
    for label, point in evaluation.items():
        gen = model.sample(point, n=args.samples, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, seed=1)[0, :, 0]
        ref = true_fields(point, 256, seed=1000)
        k, p_gen, _ = power_spectrum(gen, box, ndim=2)
        _, p_ref, _ = power_spectrum(ref, box, ndim=2)
        summary[label] = {"point": point, "spectrum_error": float(spectrum_error(p_gen, p_ref)),
                          "mean": float(gen.mean()), "true_mean": float(ref.mean())}
        where = f"n={point['index']:.3g}, A={point['amplitude']:.3g}"
        spectra[f"generated, {label} {where}"] = p_gen
        spectra[f"true, {label} {where}"] = p_ref
        gallery += [gen[0], ref[0]]
        titles += [f"generated {where}", "true"]
        arrays.append(gen)
    length = spec.coords[spec.dims[0]][1]
    plot_spectra(k, spectra, f"rad {length}-1", f"{length}2", out / "spectra.png")
    plot_field_gallery(np.stack(gallery), titles, out / "fields.png",
                       extent=(0, box, 0, box), units=spec.units)

    ds = xr.Dataset(
        {spec.name: (("case", "member", *spec.dims), np.stack(arrays),
                     {"units": spec.units, "long_name": spec.long_name})},
        coords={
            "case": ("case", np.arange(len(evaluation)), {"long_name": "evaluation case"}),
            "member": ("member", np.arange(args.samples), {"long_name": "sample member"}),
            **{d: (d, spec.coords[d][0], {"units": spec.coords[d][1]}) for d in spec.dims},
            **{name: ("case", [p[name] for p in evaluation.values()], {"units": spec.param_units[name]})
               for name in ("index", "amplitude")},
        },
        attrs={"Conventions": "CF-1.8", "title": "rho_workflow quickstart samples",
               "history": f"{time.strftime('%Y-%m-%dT%H:%M:%S')} examples/quickstart.py",
               "sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "seed": 1},
    )
    ds.to_netcdf(out / "samples.nc")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"outputs: {out / 'model.pt'}, {out / 'samples.nc'}, {out / 'spectra.png'}, {out / 'fields.png'}")


if __name__ == "__main__":
    main()
