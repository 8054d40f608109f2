"""rho_workflow: conditional diffusion models of physical fields (rho-Diffusion) as a workflow."""

__version__ = "0.1.0"
