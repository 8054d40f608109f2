"""Test-wide settings.

Tests use tiny models, for which one intra-op thread is fastest; several OpenMP threads on a
shared 2-core machine can be 100x slower (spin-waiting), so tests pin torch to one thread.
"""

import torch

torch.set_num_threads(1)
