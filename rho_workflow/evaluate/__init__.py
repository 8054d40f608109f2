"""Evaluation layer: physics metrics, power spectra and figures (see docs/contracts.md).

Compares generated fields with held-out reference fields; it neither trains nor samples.
"""

from rho_workflow.evaluate.metrics import compare_fields, value_statistics
from rho_workflow.evaluate.noise_floor import independent_noise_floor, split_noise_floor
from rho_workflow.evaluate.plots import plot_field_gallery, plot_spectra, plot_value_histograms
from rho_workflow.evaluate.spectra import (
    model_power_spectrum,
    power_spectrum,
    shell_bins,
    spectrum_error,
)

__all__ = [
    "compare_fields", "value_statistics", "independent_noise_floor", "split_noise_floor",
    "plot_field_gallery", "plot_spectra", "plot_value_histograms",
    "model_power_spectrum", "power_spectrum", "shell_bins", "spectrum_error",
]
