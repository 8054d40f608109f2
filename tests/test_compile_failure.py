"""``training.compile: true`` on a network torch.compile cannot build: one message, no traceback.

torch.compile compiles lazily, inside the first training step, so its failure would surface
as a deep TorchDynamo/inductor traceback; the trainer turns it into one message naming the
key and the fix. The failure here is real: a compile backend that refuses the graph, raised
through TorchDynamo as inductor's own failures are.
"""

from __future__ import annotations

import pytest
import torch

from rho_workflow.errors import RhoWorkflowError
from rho_workflow.training.runtime import compile_failure


def test_a_backend_failure_becomes_the_compile_message():
    def refusing_backend(graph, example_inputs):
        raise RuntimeError("cannot lower aten.convolution for these ranges")

    fn = torch.compile(lambda x: torch.sin(x) + 1, backend=refusing_backend)
    with pytest.raises(Exception) as info:
        fn(torch.ones(3))
    error = compile_failure(info.value)
    assert isinstance(error, RhoWorkflowError)
    text = str(error)
    assert text.startswith("training.compile: torch.compile could not compile the network")
    assert "cannot lower aten.convolution" in text and "fix: set training.compile: false" in text
    assert compile_failure(ValueError("a bad value")) is None  # other errors pass through
