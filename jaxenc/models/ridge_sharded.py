"""Voxelwise ridge with the voxels split across the devices of a mesh.

Ridge is independent across voxels once the decompositions of ``X`` exist, so
:class:`ShardedRidgeCV` replicates ``X`` and its per-split decompositions (in the solver dtype
of the mesh's platform) on every device, splits ``Y`` (and with it the scores, the alphas and
the coefficients) along the voxel axis of a mesh, and runs the same voxel kernels as
:class:`~jaxenc.models.RidgeCV` (:mod:`jaxenc.models.ridge_solvers`) on each shard,
``voxel_batch`` voxels at a time. Alpha selection per voxel is local to its shard; only
``alpha_per_target=False`` needs a collective (a ``psum`` of the scores over voxels).

:class:`ShardedBandedRidgeCV` splits banded ridge's voxels the same way: its search over band
weights and penalties is per voxel too, so each device's block of voxels is fitted by its own
:class:`~jaxenc.models.BandedRidgeCV` (on that device, with the same candidates) and the
results are assembled into voxel-sharded arrays; only this process's devices' blocks are fitted
here, so several processes each fit their own.

Both take ``Y`` as a host array (copied into the voxel shards) or as a
:class:`~jaxenc.stream.VoxelShards` already on the mesh (e.g. read story by story into its
shards by :func:`jaxenc.stream.stack_story_rows`), which they use as it is: no host copy.
"""

from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxenc import precision as matmul
from jaxenc.distributed import axis_size, padded_size, replicate, shard_columns, shard_program, to_host
from jaxenc.errors import AlignmentError, ConfigError, DataWarning, NonFiniteError
from jaxenc.models import ridge_solvers as solvers
from jaxenc.models.ridge import DEFAULT_ALPHAS, RidgeCV, _check_X, _check_Y, at_precision
from jaxenc.models.ridge_banded import BandedRidgeCV
from jaxenc.stream import VoxelShards

__all__ = ["ShardedRidgeCV", "ShardedBandedRidgeCV"]


def _over_batches(fn, batch: int, *arrays):
    """``fn`` applied to consecutive ``batch``-wide column blocks of ``arrays`` (their last
    axis), one block at a time, the last block narrower where ``batch`` does not divide the
    width; outputs are joined along their last axis."""
    n_batches, rest = divmod(arrays[0].shape[-1], batch)
    parts = []
    if n_batches:
        def one(i):
            return fn(*(jax.lax.dynamic_slice_in_dim(a, i * batch, batch, axis=a.ndim - 1)
                        for a in arrays))

        out = jax.lax.map(one, jnp.arange(n_batches))
        # [n_batches, ..., batch] -> [..., n_batches * batch]
        parts.append(jax.tree.map(lambda o: jnp.moveaxis(o, 0, -2).reshape(o.shape[1:-1] + (-1,)), out))
    if rest:
        parts.append(fn(*(a[..., n_batches * batch:] for a in arrays)))
    return parts[0] if len(parts) == 1 else jax.tree.map(lambda *p: jnp.concatenate(p, axis=-1), *parts)


def _scan_kernel(y):
    # Per local column: all values finite, and constant over the rows.
    return jnp.isfinite(y).all(axis=0), _constant(y)


def _constant(y):
    """Voxels constant over all rows (the padding columns among them), as RidgeCV's check."""
    return (y == y[:1]).all(axis=0)


def _cv_kernel(x, y, stack, alphas, *, batch, mode, fit_intercept, scoring):
    # Summed (not averaged) validation scores of the local voxels: [n_alphas, w]
    def one(y_batch):
        return solvers._cv_batch(x, y_batch, stack, alphas, mode=mode,
                                 fit_intercept=fit_intercept, scoring=scoring)

    return _over_batches(one, batch, y)


def _select_kernel(scores, y, alphas, alphas_report, *, axis, alpha_per_target):
    # scores [a, w] mean over splits; returns the refit alpha (compute dtype) and the reported
    # alpha (solver dtype: with float64 the candidate itself as RidgeCV reports it) per voxel [w]
    constant = _constant(y)
    scores = jnp.where(constant, 0.0, scores)
    n_alphas = alphas.shape[0]
    if alpha_per_target:
        # Ties go to the larger alpha (alphas ascending), as RidgeCV.
        idx = n_alphas - 1 - jnp.argmax(scores[::-1], axis=0)
    else:
        valid = ~constant
        count = jax.lax.psum(valid.sum(), axis)
        total = jax.lax.psum(jnp.where(valid, scores, 0.0).sum(axis=1), axis)  # [a]
        mean = jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)
        idx = jnp.full(scores.shape[1], n_alphas - 1 - jnp.argmax(mean[::-1]))
    return scores, alphas[idx], jnp.where(constant, jnp.nan, alphas_report[idx])


def _refit_kernel(x, y, dec, alphas_v, x_offset, *, batch, mode, fit_intercept):
    def one(y_batch, alphas_batch):
        return solvers._refit_batch(x, y_batch, dec, alphas_batch, x_offset, mode=mode,
                                    fit_intercept=fit_intercept)

    coef, intercept = _over_batches(one, batch, y, alphas_v)
    constant = _constant(y)
    # A constant voxel is predicted by its value, as RidgeCV.
    return jnp.where(constant, 0.0, coef), jnp.where(constant, y[0], intercept)


def _predict_kernel(x, coef, intercept):
    return x @ coef + intercept  # [n, p] @ [p, w] -> [n, w]


class ShardedRidgeCV(RidgeCV):
    """:class:`~jaxenc.models.RidgeCV` with the voxels split along a mesh axis.

    Same model, options, splits and selection rule as :class:`~jaxenc.models.RidgeCV`;
    ``X``, the decompositions and the alphas are replicated, ``Y`` is read shard by shard
    (each device gets ``n_voxels / shards`` columns, padded with constant zero columns to a
    multiple of ``shards``), or taken as it is when already voxel-sharded
    (:class:`~jaxenc.stream.VoxelShards`), and every voxel-sized result stays sharded.

    Parameters
    ----------
    mesh : jax.sharding.Mesh
        See :func:`jaxenc.distributed.make_mesh`.
    axis : str
        Mesh axis the voxels are split along.
    alphas, cv, alpha_per_target, fit_intercept, scoring, voxel_batch, split_batch, dtype, solver_dtype, precision
        As :class:`~jaxenc.models.RidgeCV`; ``voxel_batch`` counts voxels per device, and
        ``solver_dtype="auto"`` follows the platform of the mesh's devices.

    Attributes
    ----------
    n_voxels_ : int
        Voxels of ``Y``; columns ``n_voxels_:`` of the arrays below are padding.
    cv_scores_ : jax.Array of shape (n_alphas, n_voxels_padded)
        Sharded ``P(None, axis)``; 0 for constant voxels and padding.
    best_alphas_ : jax.Array of shape (n_voxels_padded,)
        Sharded ``P(axis)``, in the solver dtype; NaN for constant voxels and padding.
    coef_ : jax.Array of shape (n_features, n_voxels_padded)
        Sharded ``P(None, axis)``.
    intercept_ : jax.Array of shape (n_voxels_padded,)
        Sharded ``P(axis)``.
    alphas_, scoring_, n_splits_, n_features_in_
        As :class:`~jaxenc.models.RidgeCV`.

    Notes
    -----
    The input checks of :class:`~jaxenc.models.RidgeCV` (NaN, inf, constant voxels, aligned
    rows) scan a host ``Y`` on the host; a :class:`~jaxenc.stream.VoxelShards` is scanned
    shard by shard on its devices, only per-voxel masks reaching the host.
    """

    def __init__(self, mesh: Mesh, axis: str = "data", alphas=DEFAULT_ALPHAS, cv=5,
                 alpha_per_target: bool = True, fit_intercept: bool = True,
                 scoring: str | None = None, voxel_batch: int = 1024,
                 split_batch: int | None = None, dtype: str = "float32",
                 solver_dtype: str = "auto", precision: str = matmul.DEFAULTS["ridge"]):
        super().__init__(alphas=alphas, cv=cv, alpha_per_target=alpha_per_target,
                         fit_intercept=fit_intercept, scoring=scoring, voxel_batch=voxel_batch,
                         split_batch=split_batch, dtype=dtype, solver_dtype=solver_dtype,
                         precision=precision)
        self.mesh = mesh
        self.axis = axis

    def _platform(self) -> str:
        return self.mesh.devices.flat[0].platform

    def _sharded(self, kernel, in_specs, out_specs, **params):
        # Kept per kernel and settings (distributed.shard_program): predict, called per story,
        # compiles once.
        return shard_program(kernel, tuple(sorted(params.items())), self.mesh, in_specs, out_specs,
                             check_vma=False)

    def _check_Y(self, Y, n_rows: int):
        """``(Y, constant voxels)`` as :class:`RidgeCV`'s check: a host ``Y`` scanned on the host,
        a :class:`~jaxenc.stream.VoxelShards` on its devices, laid out on this mesh."""
        if not isinstance(Y, VoxelShards):
            return _check_Y(Y, n_rows)
        y = Y.array
        if y.ndim != 2 or y.shape[0] != n_rows:
            raise AlignmentError(f"X has {n_rows} rows (TRs) but Y has shape {y.shape}; they must be aligned row "
                                 "for row")
        if not jnp.issubdtype(y.dtype, jnp.floating):
            raise ConfigError(f"Y must hold floating-point numbers, got dtype {y.dtype}")
        layout = NamedSharding(self.mesh, P(None, self.axis))
        if not y.sharding.is_equivalent_to(layout, 2) or y.shape[1] % axis_size(self.mesh, self.axis):
            raise ConfigError(f"Y's voxels must be split along the axis {self.axis!r} of this estimator's mesh "
                              f"({layout.spec}, e.g. jaxenc.stream.stack_story_rows(..., shard='voxels')); got "
                              f"shape {y.shape} sharded {y.sharding}")
        if not 1 <= Y.n_voxels <= y.shape[1]:
            raise AlignmentError(f"Y holds {Y.n_voxels} voxels in {y.shape[1]} columns: at least one voxel, "
                                 "at most the columns")
        scan = self._sharded(_scan_kernel, P(None, self.axis), (P(self.axis), P(self.axis)))
        finite, constant = (to_host(a)[:Y.n_voxels] for a in scan(y))
        if not finite.all():
            col = int(np.argmin(finite))
            column = y.at[:, col].get(out_sharding=NamedSharding(self.mesh, P()))
            row = int(np.argmin(np.isfinite(to_host(column))))
            raise NonFiniteError(f"NaN or infinity in Y at row {row}, column {col} "
                                 f"({int((~finite).sum())} voxel(s) hold some)")
        return Y, constant

    @at_precision
    def fit(self, X, Y, groups=None) -> ShardedRidgeCV:
        """Choose the penalties by cross-validation and refit on all rows, voxels sharded.

        Parameters
        ----------
        X : array of shape (n_trs, n_features)
        Y : array of shape (n_trs, n_voxels) or (n_trs,), or VoxelShards
            Host responses (copied into the shards), or responses already voxel-sharded along
            ``axis`` of ``mesh`` (used as they are).
        groups : array-like of shape (n_trs,), optional
            Story label of each row, see :class:`~jaxenc.models.RidgeCV`.

        Returns
        -------
        self

        Raises
        ------
        AlignmentError, ConfigError
            As :meth:`RidgeCV.fit`; also a mesh without ``axis``.
        """
        mesh, axis = self.mesh, self.axis
        shards = axis_size(mesh, axis)
        X, Y, _, splits = self._check_common(X, Y, groups, self._check_Y)
        n_voxels = Y.shape[1]
        dtype = self._dtype
        width = Y.array.shape[1] if isinstance(Y, VoxelShards) else padded_size(n_voxels, mesh, axis)
        batch = min(self._voxel_batch, width // shards)
        put = partial(jax.device_put, device=NamedSharding(mesh, P()))
        intercept_kw = dict(fit_intercept=self.fit_intercept)
        solver_kw = dict(solver_dtype=self._solver_dtype)
        with solvers.solver_scope(self._solver_dtype):
            xc, x_offset = self._center(X)
            x = put(xc)
            y = (Y.array.astype(dtype) if isinstance(Y, VoxelShards)
                 else shard_columns(Y, mesh, axis, width=width, dtype=dtype))
            alphas = replicate(self.alphas_, mesh, dtype=dtype)
            mode = solvers.choose_mode(X.shape[1], min(len(t) for t, _ in splits))
            cv = self._sharded(_cv_kernel, (P(), P(None, axis), P(), P()), P(None, axis),
                               batch=batch, scoring=self.scoring_, mode=mode, **intercept_kw)
            group = len(splits) if self._split_batch is None else self._split_batch
            total = 0.0
            for g in range(0, len(splits), group):
                stack = solvers.decompose_splits(xc, splits[g:g + group], mode=mode,
                                                 dtype=dtype, **solver_kw, **intercept_kw)
                total = total + cv(x, y, put(stack), alphas)
                del stack
            select = self._sharded(_select_kernel, (P(None, axis), P(None, axis), P(), P()),
                                   (P(None, axis), P(axis), P(axis)),
                                   axis=axis, alpha_per_target=self.alpha_per_target)
            scores, alphas_v, best = select(total / len(splits), y, alphas,
                                            replicate(self.alphas_, mesh, dtype=self._solver_dtype))
            mode = solvers.choose_mode(X.shape[1], X.shape[0])
            dec = put(solvers.decompose_full(xc, mode=mode, dtype=dtype, **solver_kw))
            refit = self._sharded(_refit_kernel, (P(), P(None, axis), P(), P(axis), P()),
                                  (P(None, axis), P(axis)), batch=batch, mode=mode, **intercept_kw)
            coef, intercept = refit(x, y, dec, alphas_v, replicate(x_offset, mesh, dtype=dtype))
        self.n_voxels_ = n_voxels
        self.cv_scores_ = scores
        self.best_alphas_ = best
        self.coef_ = coef
        self.intercept_ = intercept
        return self

    @at_precision
    def predict(self, X) -> jax.Array:
        """Predicted responses ``X @ coef_ + intercept_``, voxel-sharded.

        Parameters
        ----------
        X : array of shape (n_trs, n_features)

        Returns
        -------
        jax.Array of shape (n_trs, n_voxels_padded)
            Sharded ``P(None, axis)``; columns ``n_voxels_:`` are padding (zeros).
        """
        if not hasattr(self, "coef_"):
            raise ConfigError(f"this {type(self).__name__} is not fitted yet; call fit first")
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise AlignmentError(f"X has {X.shape[1]} features but the model was fitted on "
                                 f"{self.n_features_in_}")
        run = self._sharded(_predict_kernel, (P(), P(None, self.axis), P(self.axis)),
                            P(None, self.axis))
        with solvers.solver_scope(self._dtype):
            return run(replicate(X, self.mesh, dtype=self._dtype), self.coef_, self.intercept_)

    def score(self, X, Y) -> np.ndarray:
        """R^2 of the predictions per voxel, as :meth:`RidgeCV.score` (gathered to the host).

        Parameters
        ----------
        X : array of shape (n_trs, n_features)
        Y : array of shape (n_trs, n_voxels) or (n_trs,)

        Returns
        -------
        ndarray of shape (n_voxels,)
        """
        pred = to_host(self.predict(X)).astype(np.float64)[:, :self.n_voxels_]
        Y = np.asarray(Y, dtype=np.float64)
        Y = Y[:, None] if Y.ndim == 1 else Y
        if Y.shape != pred.shape:
            raise AlignmentError(f"Y has shape {Y.shape}, predictions have {pred.shape}")
        ss_res = ((Y - pred) ** 2).sum(axis=0)
        ss_tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
        ok = ss_tot > 0
        return np.where(ok, 1.0 - ss_res / np.where(ok, ss_tot, 1.0), 0.0)


class ShardedBandedRidgeCV(ShardedRidgeCV):
    """:class:`~jaxenc.models.BandedRidgeCV` with the voxels split along a mesh axis.

    Each device's block of voxels (``n_voxels / shards`` columns, the last block padded) is
    fitted on that device by a :class:`~jaxenc.models.BandedRidgeCV` with the same band-weight
    candidates, penalties, splits and options: the choice of (band weights, penalty) is made
    voxel by voxel, so the blocks together are the full fit. Only the blocks of this
    process's devices are fitted. Prediction and scoring are those of
    :class:`ShardedRidgeCV`.

    Parameters
    ----------
    mesh : jax.sharding.Mesh
    bands : sequence of band specifications
        As :class:`~jaxenc.models.BandedRidgeCV`.
    axis : str
        Mesh axis the voxels are split along.
    alphas, n_iter, concentration, corners, candidates, random_state, cv, fit_intercept, scoring, voxel_batch, \
split_batch, dtype, lapack_threads, solver_dtype, precision
        As :class:`~jaxenc.models.BandedRidgeCV` (a penalty per voxel: ``alpha_per_target``
        is always True here, since a shared choice needs every voxel's scores).

    Attributes
    ----------
    n_voxels_ : int
        Voxels of ``Y``; columns ``n_voxels_:`` of the arrays below are padding.
    coef_ : jax.Array of shape (n_features, n_voxels_padded)
        Sharded ``P(None, axis)``; zero on padding.
    intercept_, best_alphas_, best_candidates_ : jax.Array of shape (n_voxels_padded,)
        Sharded ``P(axis)``; on padding 0, NaN and -1.
    deltas_, band_alphas_ : jax.Array of shape (n_bands, n_voxels_padded)
        Sharded ``P(None, axis)``; NaN on padding.
    cv_scores_ : jax.Array of shape (n_candidates, n_voxels_padded)
        Sharded ``P(None, axis)``; 0 on padding.
    candidates_, alphas_, scoring_, n_splits_, n_features_in_
        As :class:`~jaxenc.models.BandedRidgeCV`.
    """

    def __init__(self, mesh: Mesh, bands, axis: str = "data", alphas=DEFAULT_ALPHAS, n_iter: int = 20,
                 concentration=(0.1, 1.0), corners: bool = True, candidates=None,
                 random_state: int | None = 0, cv=5, fit_intercept: bool = True,
                 scoring: str | None = None, voxel_batch: int = 1024, split_batch: int | None = None,
                 dtype: str = "float32", lapack_threads: int | None = None,
                 solver_dtype: str = "auto", precision: str = matmul.DEFAULTS["ridge"]):
        super().__init__(mesh, axis, alphas=alphas, cv=cv, fit_intercept=fit_intercept, scoring=scoring,
                         voxel_batch=voxel_batch, split_batch=split_batch, dtype=dtype,
                         solver_dtype=solver_dtype, precision=precision)
        self.bands = bands
        self.n_iter = n_iter
        self.concentration = concentration
        self.corners = corners
        self.candidates = candidates
        self.random_state = random_state
        self.lapack_threads = lapack_threads

    def _block_model(self, candidates) -> BandedRidgeCV:
        return BandedRidgeCV(self.bands, alphas=self.alphas, candidates=candidates, cv=self.cv,
                             fit_intercept=self.fit_intercept, scoring=self.scoring,
                             voxel_batch=self.voxel_batch, split_batch=self.split_batch, dtype=self.dtype,
                             lapack_threads=self.lapack_threads, solver_dtype=self.solver_dtype,
                             precision=self.precision)

    @at_precision
    def fit(self, X, Y, groups=None) -> ShardedBandedRidgeCV:
        """Search band weights and penalties per voxel, each device fitting its voxel block.

        Parameters
        ----------
        X : array of shape (n_trs, n_features)
        Y : array of shape (n_trs, n_voxels) or (n_trs,), or VoxelShards
            Host responses, or responses voxel-sharded along ``axis`` of ``mesh``; each block
            reads only its columns (of a VoxelShards, its device's shard).
        groups : array-like of shape (n_trs,), optional
            Story label of each row, see :class:`~jaxenc.models.RidgeCV`.

        Returns
        -------
        self

        Raises
        ------
        AlignmentError, ConfigError
            As :meth:`BandedRidgeCV.fit`; also a mesh without ``axis``.
        """
        mesh, axis = self.mesh, self.axis
        axis_size(mesh, axis)
        X, Y, _, _ = self._check_common(X, Y, groups, self._check_Y)
        # One draw of the candidates for every block (and every process).
        searcher = BandedRidgeCV(self.bands, n_iter=self.n_iter, concentration=self.concentration,
                                 corners=self.corners, candidates=self.candidates,
                                 random_state=self.random_state)
        searcher._band_of_column(X.shape[1])
        self.candidates_ = searcher._make_candidates(len(self.bands))
        n_voxels, n_features = Y.shape[1], X.shape[1]
        if isinstance(Y, VoxelShards):
            width = Y.array.shape[1]
            local = {shard.device: shard.data for shard in Y.array.addressable_shards}
        else:
            width = padded_size(n_voxels, mesh, axis)
        blocks: dict[tuple[int, int], BandedRidgeCV | None] = {}
        owners = NamedSharding(mesh, P(None, axis)).addressable_devices_indices_map((n_features, width))
        for device, index in owners.items():
            start, stop = index[1].start or 0, width if index[1].stop is None else index[1].stop
            if (start, stop) in blocks:
                continue
            model = None
            if start < n_voxels:
                model = self._block_model(self.candidates_)
                # The constant-voxel warning was given once, for all voxels, above.
                with jax.default_device(device), warnings.catch_warnings():
                    warnings.simplefilter("ignore", DataWarning)
                    block = (local[device][:, :min(stop, n_voxels) - start] if isinstance(Y, VoxelShards)
                             else Y[:, start:min(stop, n_voxels)])
                    model.fit(X, block, groups)
            blocks[start, stop] = model

        def assemble(name, rows, fill, dtype, vector=False):
            shape = (width,) if vector else (rows, width)

            def read(index):
                columns = index[-1]
                start, stop = columns.start or 0, width if columns.stop is None else columns.stop
                out = np.full(((stop - start,) if vector else (rows, stop - start)), fill, dtype)
                model = blocks[start, stop]
                if model is not None:
                    values = np.asarray(getattr(model, name), dtype)
                    out[..., :values.shape[-1]] = values
                return out

            return jax.make_array_from_callback(shape, NamedSharding(mesh, P(axis) if vector else P(None, axis)),
                                                read)

        n_bands, n_cand = len(self.bands), len(self.candidates_)
        solver = np.dtype(self._solver_dtype)
        with solvers.solver_scope(self._solver_dtype):
            self.coef_ = assemble("coef_", n_features, 0.0, self._dtype)
            self.intercept_ = assemble("intercept_", 0, 0.0, self._dtype, vector=True)
            self.best_alphas_ = assemble("best_alphas_", 0, np.nan, solver, vector=True)
            self.best_candidates_ = assemble("best_candidates_", 0, -1, np.int32, vector=True)
            self.deltas_ = assemble("deltas_", n_bands, np.nan, solver)
            self.band_alphas_ = assemble("band_alphas_", n_bands, np.nan, solver)
            self.cv_scores_ = assemble("cv_scores_", n_cand, 0.0, solver)
        self.n_voxels_ = n_voxels
        return self
