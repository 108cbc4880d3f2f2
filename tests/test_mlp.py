"""The engine trains a real network: a 2-layer MLP fits a small classification dataset."""

import numpy as np

import tinylora
import tinylora.functional as F
from tinylora.nn import Linear, Module
from tinylora.optim import SGD


class MLP(Module):
    def __init__(self, n_in, n_hidden, n_out):
        super().__init__()
        self.fc1 = Linear(n_in, n_hidden)
        self.fc2 = Linear(n_hidden, n_out)

    def forward(self, x):
        return self.fc2(self.fc1(x).tanh())


def _two_spirals(n_per_class=100, seed=0):
    """Two interleaved spirals in 2-D: not linearly separable, easy for an MLP."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0, 1, n_per_class)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0, 0.02, (2 * n_per_class, 2))
    y = np.concatenate([np.zeros(n_per_class), np.ones(n_per_class)]).astype(np.int64)
    return x.astype(np.float32), y


def test_mlp_fits_two_spirals():
    tinylora.manual_seed(0)
    x_np, y_np = _two_spirals()
    x, y = tinylora.tensor(x_np), tinylora.tensor(y_np)
    model = MLP(2, 64, 2)
    opt = SGD(model.parameters(), lr=0.5, momentum=0.9)
    first = None
    for step in range(600):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with tinylora.no_grad():
        accuracy = float((model(x).numpy().argmax(axis=1) == y_np).mean())
    assert loss.item() < 0.2 * first, f"loss went from {first:.3f} to {loss.item():.3f}"
    assert accuracy > 0.95, f"training accuracy {accuracy:.3f}"
