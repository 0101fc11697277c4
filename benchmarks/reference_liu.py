"""The authors' code of Liu et al. 2024 (github.com/neurophysics-cnrsthales/unsupervised-target), called
from a checkout given by path, for side-by-side runs with neurolearn in one process.

Nothing of their repository is copied here: :func:`load` puts the checkout on ``sys.path`` and imports
their modules (``ep.network``, ``ep.train_test``, ``ep.actions``, ``bp.network``, ``bp.train_test``,
``bp.actions``); the functions below only build their configuration dictionaries (``jparams``, as their
``configFile/unsupervised_{bp,ep}/*/config.json`` give them), feed their epoch functions
(``train_unsupervised`` for BP, ``train_unsupervised_ep`` for EP) an iterable of ``(x, y)`` batches
in an order chosen by the caller, and read their networks' responses (``net(x)`` for BP,
``inference_ep`` -- the free phase from zero, no dropout -- for EP).

Facts about their code that the calls respect (REFERENCES.md, "Liu et al."):

* their EP configuration lists are reversed internally (``ep/main.py``: output first, input last), so
  ``fcLayers``, ``lr`` and ``dropProb`` are reversed here before the network is built;
* their EP biases are created with ``torch.empty`` and never initialised: they are set to zero here
  (with uninitialised biases their one-layer EP stays at chance);
* their EP activation ``rho`` / ``rhop`` is defined in ``ep/main.py``, which parses the command line and
  loads the data sets on import; the hard sigmoid ``rho(x) = clamp(x, 0, 1)``, ``rho'(x) = 1[0 <= x <= 1]``
  is therefore passed here, as their ``main`` does for ``"activation_function": "hardsigm"``.

Modules their training loop does not need are replaced in ``sys.modules`` for this process only,
before their code is imported (see :func:`_install_stubs`): ``funcs.data`` (which imports
``torchvision``, absent beside torch 2.13 here, and defines a ``torchvision`` dataset subclass at import
time), and ``pandas`` / ``optuna`` when they are not installed (used only by their result files and
hyperparameter search). Every stubbed name raises a clear error if their code ever reaches it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import torch

#: files a checkout of the authors' repository must hold (checked before anything is imported)
REQUIRED_FILES = ("ep/network.py", "ep/train_test.py", "ep/actions.py", "bp/network.py", "bp/train_test.py",
                  "bp/actions.py", "funcs/tools.py", "funcs/activations.py",
                  "configFile/unsupervised_ep/1layer/config.json")

#: their unsupervised configurations (configFile/unsupervised_{bp,ep}/...), the fields their epoch
#: functions and networks read; given in their order (input first), reversed for EP by :func:`build`
CONFIGS = {
    "bp1": dict(kind="bp", fcLayers=[784, 2000], lr=[8.0], activation_function=["x", "hardsigm"], gamma=0.4,
                nudge=6, smooth=False, dropProb=[0.3, 0.2], batchSize=16, eta=0.6, end_factor=5e-4, epochs=200),
    "bp2": dict(kind="bp", fcLayers=[784, 2000, 2000], lr=[2.5, 5.0], activation_function=["x", "relu", "hardsigm"],
                gamma=0.5, nudge=5, smooth=False, dropProb=[0.3, 0.2, 0.2], batchSize=16, eta=0.6, end_factor=5e-4,
                epochs=200),
    "ep1": dict(kind="ep", fcLayers=[784, 2000], lr=[0.03], gamma=0.3, nudge=5, smooth=True, dropProb=[0.3, 0.2],
                batchSize=16, eta=0.1, T=40, Kmax=10, end_factor=1e-3, epochs=100),
    "ep2": dict(kind="ep", fcLayers=[784, 2000, 2000], lr=[0.01, 0.015], gamma=0.65, nudge=4, smooth=True,
                dropProb=[0.3, 0.0, 0.2], batchSize=32, eta=0.1, T=60, Kmax=20, end_factor=1e-3, epochs=100),
}


class NotACheckout(ValueError):
    """The path given as the authors' checkout is not one (names the missing file)."""


def check_checkout(path: str | Path) -> Path:
    """``path`` as a resolved directory holding every file of :data:`REQUIRED_FILES`; raises
    :class:`NotACheckout` naming the first missing file otherwise."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise NotACheckout(f"--reference: {str(path)!r} is not a directory (expected a checkout of "
                              "github.com/neurophysics-cnrsthales/unsupervised-target)")
    for f in REQUIRED_FILES:
        if not (p / f).is_file():
            raise NotACheckout(f"--reference: {str(p)!r} does not look like a checkout of "
                                  f"neurophysics-cnrsthales/unsupervised-target: {f} is missing")
    return p


def _stub(name: str, why: str, **attrs) -> types.ModuleType:
    """A module named ``name`` whose every other attribute raises a RuntimeError saying ``why``."""

    class Stub(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise RuntimeError(f"{name}.{attr}: stubbed by benchmarks/reference_liu.py ({why}); "
                               "the authors' code reached a part the side-by-side run does not support")

    m = Stub(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def _install_stubs() -> None:
    """Replace, in this process only, the modules the authors' training loop does not use and that do
    not import here (see module docstring)."""

    # torch._dynamo (imported by the first optimiser) scans the installed modules at import: import it
    # before any stub exists, so that it sees this environment as it is
    import torch._dynamo  # noqa: F401

    def no_multi_targets(*a, **k):
        raise RuntimeError("funcs.data.generate_n_targets_label: stubbed (supervised training only)")

    # their funcs/data.py imports torchvision (absent here) and subclasses torchvision.datasets.CIFAR10 at
    # import time; the unsupervised epoch functions use none of it (we hand them the batches ourselves)
    sys.modules["funcs.data"] = _stub("funcs.data", "their data loading needs torchvision",
                                      generate_n_targets_label=no_multi_targets)
    for name in ("pandas", "optuna"):  # result files and hyperparameter search only
        if importlib.util.find_spec(name) is None:
            sys.modules.setdefault(name, _stub(name, f"{name} is not installed"))


_LOADED: dict = {}


def load(path: str | Path) -> dict:
    """Import the authors' modules from the checkout at ``path`` (once per process); returns
    ``{"root", "ep_network", "ep_train", "ep_actions", "bp_network", "bp_train", "bp_actions", "tools"}``."""
    root = check_checkout(path)
    if _LOADED:
        if _LOADED["root"] != root:
            raise NotACheckout(f"--reference: the authors' code is already loaded from {_LOADED['root']}, "
                                  f"not {root} (one checkout per process)")
        return _LOADED
    for name in ("funcs", "ep", "bp"):
        if name in sys.modules and not str(getattr(sys.modules[name], "__file__", "")).startswith(str(root)):
            raise NotACheckout(f"--reference: a module named {name!r} from elsewhere is already imported")
    _install_stubs()
    sys.path.insert(0, str(root))
    mods = {"root": root}
    for key, mod in (("ep_network", "ep.network"), ("ep_train", "ep.train_test"), ("ep_actions", "ep.actions"),
                     ("bp_network", "bp.network"), ("bp_train", "bp.train_test"), ("bp_actions", "bp.actions"),
                     ("tools", "funcs.tools")):
        mods[key] = importlib.import_module(mod)
    _LOADED.update(mods)
    return _LOADED


def jparams(setup: str, device: int = -1) -> dict:
    """Their configuration dictionary for ``setup`` (a key of :data:`CONFIGS`), as their ``main`` hands
    it to the network and epoch functions (EP lists reversed); ``device``: their convention, -1 for the
    CPU, ``i >= 0`` for CUDA device ``i``."""
    if setup not in CONFIGS:
        raise ValueError(f"setup must be one of {sorted(CONFIGS)}, got {setup!r}")
    if not isinstance(device, int) or device < -1:
        raise ValueError(f"device must be -1 (CPU) or a CUDA device index >= 0, got {device!r}")
    if device >= 0 and not torch.cuda.is_available():
        raise ValueError(f"device={device} asks for CUDA, but torch sees no CUDA device here")
    c = {k: (list(v) if isinstance(v, list) else v) for k, v in CONFIGS[setup].items()}
    c.update(device=device, n_class=10, optimizer="SGD", loss="MSE", cnn=False)
    if c["kind"] == "ep":
        c.update(dt=0.2, beta=0.2, clamped=1, error_estimate="one-sided", dropout=True,
                 activation_function="hardsigm")
        for key in ("fcLayers", "lr", "dropProb"):
            c[key].reverse()
    return c


def _rho(x):
    return x.clamp(min=0).clamp(max=1)


def _rhop(x):
    return (x >= 0) & (x <= 1)


class Reference:
    """The authors' network, optimiser and learning-rate schedule for one setup.

    ``fit_epoch(batches)`` runs their epoch function on ``batches`` (an iterable of input tensors, one per
    mini-batch) and steps their ``LinearLR`` (1 -> ``end_factor`` over ``epochs`` epochs, as their
    ``unsupervised_bp`` / ``unsupervised_ep``); ``responses(x)`` is what their direct association reads.
    ``init_weights`` (optional): a list of ``(weight (out, in), bias (out,))`` per layer, input side first,
    copied into their network (transposed where their EP layout needs it), so both start equal.
    ``device``: -1 (CPU) or a CUDA index, passed to their code as their ``jparams["device"]``. Batches are
    handed over on the CPU and their loop moves them; their EP loop draws its dropout masks and beta signs
    on the CPU before moving them, so a CUDA run uses the same random stream as a CPU run of the same seed.
    """

    def __init__(self, path: str | Path, setup: str, seed: int = 0, init_weights=None, schedule_epochs=None,
                 device: int = -1):
        self.mods = load(path)
        self.setup, self.jp = setup, jparams(setup, device)
        torch.manual_seed(seed)
        if self.jp["kind"] == "ep":
            with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.script, which their main calls
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.script(self.mods["ep_network"].MlpEP(self.jp, _rho, _rhop))
            with torch.no_grad():  # their biases are never initialised (torch.empty): zero them
                for b in self.net.bias:
                    b.zero_()
            _, self.optimizer = self.mods["ep_actions"].define_optimizer(self.net, self.jp["lr"], "SGD")
        else:
            self.net = self.mods["bp_network"].MLP(self.jp)
            _, self.optimizer = self.mods["bp_actions"].define_optimizer(self.net, self.jp["lr"], "SGD")
        if init_weights is not None:
            self.set_weights(init_weights)
        self.scheduler = torch.optim.lr_scheduler.LinearLR(
            self.optimizer, start_factor=1, end_factor=self.jp["end_factor"],
            total_iters=schedule_epochs or self.jp["epochs"])
        self.epoch = 0

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Their parameters as ``(weight (out, in), bias (out,))`` per layer, input side first (views)."""
        if self.jp["kind"] == "ep":
            # W[i]: (n_{i+1}, n_i) of the reversed sizes, used as rho(s_above) @ W[i]; bias[i] is layer i's
            n = len(self.net.W)
            return [(self.net.W[n - 1 - l].T, self.net.bias[n - 1 - l]) for l in range(n)]
        lin = [m for m in self.net.fcnet if isinstance(m, torch.nn.Linear)]
        return [(m.weight, m.bias) for m in lin]

    @torch.no_grad()
    def set_weights(self, weights) -> None:
        """Copy ``[(weight (out, in), bias (out,)), ...]`` (input side first) into their network."""
        mine = self.layers()
        if len(weights) != len(mine):
            raise ValueError(f"init_weights: {len(mine)} layers expected, got {len(weights)}")
        for (w, b), (w0, b0) in zip(mine, weights):
            if w.shape != w0.shape or b.shape != b0.shape:
                raise ValueError(f"init_weights: shapes {tuple(w0.shape)}, {tuple(b0.shape)} do not match "
                                 f"{tuple(w.shape)}, {tuple(b.shape)}")
            w.copy_(w0)
            b.copy_(b0)

    def fit_epoch(self, batches) -> None:
        """One epoch of their unsupervised training on ``batches`` (iterable of ``(B, 784)`` tensors)."""
        loader = ((xb, torch.zeros(xb.shape[0], dtype=torch.long)) for xb in batches)
        if self.jp["kind"] == "ep":
            self.mods["ep_train"].train_unsupervised_ep(self.net, self.jp, loader, self.optimizer, self.epoch)
        else:
            self.mods["bp_train"].train_unsupervised(self.net, self.jp, loader, self.epoch, self.optimizer)
        self.scheduler.step()
        self.epoch += 1

    @torch.no_grad()
    def responses(self, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """Their network's outputs for ``x``: ``net(x)`` in eval mode (BP), ``inference_ep`` (EP)."""
        self.net.eval()
        out = []
        for i in range(0, x.shape[0], chunk):
            xb = x[i : i + chunk]
            if self.jp["kind"] == "ep":
                out.append(self.mods["ep_train"].inference_ep(self.net, xb).cpu())
            else:
                out.append(self.net(xb.to(self.net.device) if self.jp["device"] >= 0 else xb).cpu())
        self.net.train()
        return torch.cat(out, 0)
