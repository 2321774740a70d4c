"""The PyTorch training a user would otherwise write: one model per (subject, fold), in a loop.

Per subject and fold: PCA (scikit-learn) on the fold's training responses, a ``DataLoader``
over a ``TensorDataset`` (batch 128, shuffled), the paper's MLP (Linear -> BatchNorm1d -> tanh
-> Dropout -> Linear), AdamW, L1 loss, early stopping on the validation loss with the best
``state_dict`` kept; the test prediction is the fold average of the inverse-projected
predictions. Same architecture and hyperparameters as the jaxenc run it is raced against, and
the same initialisation: PyTorch's default ``nn.Linear`` draws, which jaxenc's layers copy
(``jaxenc.models.nonlinear.torch_linear``); with flax's LeCun-normal default the jaxenc MLP
reached a test correlation of 0.24 against PyTorch's 0.30 after 10 epochs.
On a GPU (``device="cuda"``) the model, the validation rows and each minibatch live on the
device, the ``DataLoader`` drawing minibatches from host memory as a user's loop would.
Standalone: imports neither jaxenc nor JAX.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TorchMLP(nn.Module):
    """Linear (no bias; BatchNorm removes it) -> BatchNorm1d -> tanh -> Dropout -> Linear."""

    def __init__(self, n_features: int, n_outputs: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden, bias=False),
            nn.BatchNorm1d(hidden, momentum=0.1, eps=1e-5),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_outputs),
        )

    def forward(self, x):
        return self.net(x)


def train_one(x_train, z_train, x_val, z_val, *, hidden, dropout, lr, weight_decay, batch_size,
              max_epochs, patience, seed, device="cpu"):
    """Train one MLP on PCA targets with early stopping; return the best model and epochs run.

    Parameters
    ----------
    x_train, x_val : ndarray of shape (n, n_features)
    z_train, z_val : ndarray of shape (n, n_components)
    hidden, dropout, lr, weight_decay, batch_size, max_epochs, patience, seed
        As in the jaxenc configuration.
    device : str
        torch device of the model and of the minibatches (``"cpu"`` or ``"cuda"``).

    Returns
    -------
    (TorchMLP, int)
    """
    torch.manual_seed(seed)
    model = TorchMLP(x_train.shape[1], z_train.shape[1], hidden, dropout).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.L1Loss()
    loader = DataLoader(TensorDataset(torch.from_numpy(x_train), torch.from_numpy(z_train)),
                        batch_size=batch_size, shuffle=True)
    xv, zv = torch.from_numpy(x_val).to(device), torch.from_numpy(z_val).to(device)
    best, best_state, bad, epochs = float("inf"), None, 0, 0
    for _ in range(max_epochs):
        model.train()
        for xb, zb in loader:
            xb, zb = xb.to(device, non_blocking=True), zb.to(device, non_blocking=True)
            opt.zero_grad()
            loss_fn(model(xb), zb).backward()
            opt.step()
        epochs += 1
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(xv), zv).item()
        if val < best:
            best, best_state, bad = val, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, epochs


def fit_predict(subjects: dict, folds: dict, test_features: dict, *, n_components=512, hidden=256,
                dropout=0.2, lr=1e-3, weight_decay=1e-4, batch_size=128, max_epochs=200,
                patience=10, seed=0, pca_cache: dict | None = None, device: str = "cpu") -> tuple[dict, list[int]]:
    """Train every (subject, fold) model one after another and predict the test story.

    Parameters
    ----------
    subjects : dict of str to (dict of story to features, dict of story to responses)
    folds : dict of str to list of (train stories, validation stories)
    test_features : dict of str to ndarray of shape (n_test, n_features)
    pca_cache : dict, optional
        Each fold's fitted PCA under (subject, training stories), reused by later calls.
    device : str
        torch device the models train on (``"cpu"`` or ``"cuda"``).

    Returns
    -------
    (dict of str to ndarray of shape (n_test, n_voxels), list of int)
        Fold-averaged voxel predictions per subject, and the epochs each model ran.
    """
    preds, epochs_run = {}, []
    for si, (subject, (feats, resps)) in enumerate(subjects.items()):
        fold_preds = []
        for k, (train, val) in enumerate(folds[subject]):
            y_train = np.concatenate([resps[s] for s in train])
            key = (subject, tuple(train))
            pca = (pca_cache or {}).get(key) or PCA(n_components, svd_solver="full").fit(y_train)
            if pca_cache is not None:
                pca_cache[key] = pca
            x_train = np.concatenate([feats[s] for s in train]).astype(np.float32)
            x_val = np.concatenate([feats[s] for s in val]).astype(np.float32)
            z_train = pca.transform(y_train).astype(np.float32)
            z_val = pca.transform(np.concatenate([resps[s] for s in val])).astype(np.float32)
            model, epochs = train_one(x_train, z_train, x_val, z_val, hidden=hidden, dropout=dropout,
                                      lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                                      max_epochs=max_epochs, patience=patience, seed=seed + 100 * si + k,
                                      device=device)
            epochs_run.append(epochs)
            with torch.no_grad():
                z = model(torch.from_numpy(test_features[subject].astype(np.float32)).to(device)).cpu().numpy()
            fold_preds.append(pca.inverse_transform(z))
        preds[subject] = np.mean(fold_preds, axis=0)
    return preds, epochs_run


def fastest_threads(n_features: int, n_outputs: int, *, hidden: int = 256, batch_size: int = 128,
                    steps: int = 30) -> dict:
    """Set torch's intra-op threads to the count that trains this MLP fastest here, and return
    the seconds per step of each count tried (1 up to the machine's cores).

    On a shared or oversubscribed machine torch's spinning worker threads can make two threads
    many times slower than one; the reference is raced at its best setting.
    """
    import os
    import time

    rng = np.random.default_rng(0)
    xb = torch.from_numpy(rng.standard_normal((batch_size, n_features)).astype(np.float32))
    zb = torch.from_numpy(rng.standard_normal((batch_size, n_outputs)).astype(np.float32))
    model = TorchMLP(n_features, n_outputs, hidden)
    opt = torch.optim.AdamW(model.parameters())
    timings = {}
    for threads in range(1, (os.cpu_count() or 1) + 1):
        torch.set_num_threads(threads)
        for i in range(steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            opt.zero_grad()
            nn.functional.l1_loss(model(xb), zb).backward()
            opt.step()
        timings[threads] = (time.perf_counter() - t0) / steps
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return {"threads": best, "seconds_per_step": timings}
