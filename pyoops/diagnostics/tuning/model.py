r"""The Gaussian likelihood of the innovations, its analytic gradient and Fisher information.

Innovations :math:`d_k \sim N(0, \mathbf S_k(\theta))`, independent between cycles, with

.. math::

    \mathbf S_k = c_s\,\mathbf C_{s,k} + c_e\,(L_\ell\circ\mathbf C_{e,k}) + \sum_g r_g\,\mathbf D_{g,k},
    \qquad \mathbf D_{g,k} = \mathrm{diag}\big(\sigma_{o,i}^2\,[g(i) = g]\big)

(coefficients in :mod:`~pyoops.diagnostics.tuning.parameters`).  Exact computation by
Cholesky factorisation :math:`\mathbf S_k = \mathbf L_k\mathbf L_k^\mathrm{T}`:

.. math::

    -\log L(\theta) = \tfrac12\sum_k\big[\log\det\mathbf S_k + d_k^\mathrm{T}\mathbf S_k^{-1}d_k
    + p_k\log 2\pi\big],\qquad \log\det\mathbf S_k = 2\textstyle\sum_i\log (\mathbf L_k)_{ii}.

Every derivative of :math:`\mathbf S_k` with respect to an internal parameter :math:`\phi_i`
is a combination :math:`\partial_i\mathbf S_k = \sum_b J_{ib}\mathbf B_{b,k}` of the *bases*
:math:`\mathbf B_b \in \{\mathbf C_s,\ L_\ell\circ\mathbf C_e,\ (\partial_{\log\ell}L_\ell)\circ\mathbf C_e,
\ \mathbf D_g\}`
(:meth:`HybridCoefficients.coefficient_jacobian`), so with :math:`\alpha_k = \mathbf S_k^{-1}d_k`

.. math::

    \frac{\partial(-\log L)}{\partial\phi_i} = \sum_b J_{ib}\,\tfrac12\sum_k\big[
    \mathrm{tr}(\mathbf S_k^{-1}\mathbf B_{b,k}) - \alpha_k^\mathrm{T}\mathbf B_{b,k}\alpha_k\big],
    \qquad
    \mathcal I_{ij} = \sum_{a,b} J_{ia}J_{jb}\,\tfrac12\sum_k
    \mathrm{tr}(\mathbf S_k^{-1}\mathbf B_{a,k}\mathbf S_k^{-1}\mathbf B_{b,k}),

the expected (Fisher) information, which adds over independent cycles.  Cycles with the
same number of observations are stacked and factorised together (batched numpy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotri

from pyoops.diagnostics.tuning.data import TuningData
from pyoops.diagnostics.tuning.localization import (
    localization,
    localization_log_length_derivative,
)
from pyoops.diagnostics.tuning.parameters import Parametrization, is_group_amplitude

__all__ = ["Block", "Coefficients", "Evaluation", "HybridCoefficients", "HybridCovarianceModel",
           "whitened_cosine_summary"]

LOG_2PI = math.log(2.0 * math.pi)
STATIC_BASIS, ENSEMBLE_BASIS, LENGTH_BASIS = 0, 1, 2     # basis indices: C_s, L∘C_e, (∂_logℓ L)∘C_e
FIRST_GROUP_BASIS = 3                                    # the obs-group diagonals D_g follow from here on
Coefficients = tuple[float, float, np.ndarray, float]    # (c_s, c_e, r per obs group, length)


@dataclass
class Block:
    """Cycles with the same number of observations ``p``, stacked (``K`` cycles)."""

    index: np.ndarray          # positions of the cycles in the data
    d: np.ndarray              # (K, p) innovations
    sig2: np.ndarray           # (K, p) assumed sigma_o^2
    gcode: np.ndarray          # (K, p) obs-group codes
    cs: np.ndarray             # (K, p, p) static covariance
    ce: np.ndarray | None      # (K, p, p) raw ensemble covariance (zeros for cycles without), None if none
    dist: np.ndarray | None    # (K, p, p) distances, None without distance function

    @property
    def p(self) -> int:
        return int(self.d.shape[1])


@dataclass
class Evaluation:
    """Negative log-likelihood, its gradient and the Fisher information in the internal parameters."""

    nll: float
    gradient: np.ndarray | None = None
    fisher: np.ndarray | None = None


@dataclass
class BlockState:
    """The factorised covariances of a block at one parameter value."""

    block: Block
    s: np.ndarray              # (K, p, p)
    sinv: np.ndarray           # (K, p, p)
    alpha: np.ndarray          # (K, p) S^-1 d
    logdet: np.ndarray         # (K,)
    cel: np.ndarray | None     # L o Ce
    dcel: np.ndarray | None    # dL/dlog(l) o Ce


def _cholesky_inverse(chol: np.ndarray) -> np.ndarray:
    r""":math:`\mathbf S^{-1} = \mathbf L^{-\mathrm T}\mathbf L^{-1}` of every :math:`\mathbf S = \mathbf L\mathbf
    L^\mathrm T` from its Cholesky factor (``(K, p, p)``, lower, zeros above; **overwritten**): LAPACK ``dpotri``
    in place on :math:`\mathbf U = \mathbf L^\mathrm T` (the factor's Fortran-order view, so no copy;
    :math:`\tfrac23p^3` flops, where forming :math:`\mathbf L^{-1}` and multiplying takes :math:`3p^3`), then
    the triangle it leaves mirrored."""
    out = np.empty_like(chol)
    diagonal = np.diag_indices(chol.shape[1])
    for k in range(chol.shape[0]):
        _, info = dpotri(chol[k].T, lower=0, overwrite_c=1)     # S = U^T U; S^-1 in U's triangle, in place
        if info != 0:
            raise np.linalg.LinAlgError(f"dpotri failed (info {info})")
        np.add(chol[k], chol[k].T, out=out[k])                  # the other triangle of chol[k] is zero
        out[k][diagonal] *= 0.5
    return out


class HybridCoefficients:
    r"""The map from parameters to the coefficients of the bases, shared by every likelihood of :math:`\mathbf S_k`.

    :math:`\mathbf S = c_s\mathbf C_s + c_e(L_\ell\circ\mathbf C_e) + \sum_g r_g\mathbf D_g` and
    :math:`\partial_{\phi_i}\mathbf S = \sum_b J_{ib}\mathbf B_b` over the bases (indices
    ``STATIC_BASIS``, ``ENSEMBLE_BASIS``, ``LENGTH_BASIS``, then ``FIRST_GROUP_BASIS + g``).  ``needs_length``:
    whether the length is free or fixed finite (the model localizes :math:`\mathbf C_e`).
    """

    def __init__(self, data: TuningData, parametrization: Parametrization) -> None:
        self.data = data
        self.par = parametrization
        self.groups = list(parametrization.groups)
        self.nobs = data.nobs
        self.nbases = FIRST_GROUP_BASIS + len(self.groups)
        self.needs_length = ("length" in parametrization.free
                             or math.isfinite(parametrization.fixed.get("length", math.inf)))
        if self.needs_length and data.distance is None:
            raise ValueError("a finite or free localization length needs TuningData.distance")

    def group_codes(self, labels: np.ndarray) -> np.ndarray:
        """Integer obs-group codes (positions in ``self.groups``) of obs-group labels."""
        code = {g: i for i, g in enumerate(self.groups)}
        return np.array([code[str(g)] for g in np.ravel(labels)], dtype=np.int64).reshape(np.shape(labels))

    # -- coefficients ---------------------------------------------------------------------------
    def coefficients(self, values: Mapping[str, float]) -> Coefficients:
        """:math:`(c_s, c_e, r, \\ell)` from natural values (``r`` per obs group)."""
        lam, a_s, a_e = values["inflation"], values["a_s"], values["a_e"]
        if self.par.form == "hybrid":
            beta = values["beta"]
            c_s, c_e = lam * (1.0 - beta) * a_s, lam * beta * a_e
        else:
            c_s, c_e = lam * values["w_s"] * a_s, lam * values["w_e"] * a_e
        r = np.array([self.par.amplitude(values, g) for g in self.groups])
        return c_s, c_e, r, float(values["length"])

    def coefficient_jacobian(self, values: Mapping[str, float]) -> np.ndarray:
        r""":math:`J_{ib}`: :math:`\partial_{\phi_i}\mathbf S = \sum_b J_{ib}\mathbf B_b`
        (bases C_s, L∘C_e, ∂L∘C_e, D_g)."""
        c_s, c_e, r, _ = self.coefficients(values)
        jac = np.zeros((self.par.size, self.nbases))
        for i, name in enumerate(self.par.free):
            row = jac[i]
            if name == "inflation":
                row[STATIC_BASIS], row[ENSEMBLE_BASIS] = c_s, c_e
            elif name == "beta":
                b, lam = values["beta"], values["inflation"]
                row[STATIC_BASIS] = -lam * values["a_s"] * b * (1 - b)
                row[ENSEMBLE_BASIS] = lam * values["a_e"] * b * (1 - b)
            elif name in ("a_s", "w_s"):
                row[STATIC_BASIS] = c_s
            elif name in ("a_e", "w_e"):
                row[ENSEMBLE_BASIS] = c_e
            elif name == "length":
                row[LENGTH_BASIS] = c_e
            elif name == "a_o":
                for g, grp in enumerate(self.groups):
                    if f"a_o[{grp}]" not in values:
                        row[FIRST_GROUP_BASIS + g] = r[g]
            elif is_group_amplitude(name):
                g = self.groups.index(name[4:-1])
                row[FIRST_GROUP_BASIS + g] = r[g]
        return jac


class HybridCovarianceModel(HybridCoefficients):
    """The innovation covariances :math:`\\mathbf S_k(\\theta)` of ``data`` under ``parametrization``,
    factorised by Cholesky (dense :math:`p_k\\times p_k` matrices)."""

    def __init__(self, data: TuningData, parametrization: Parametrization) -> None:
        super().__init__(data, parametrization)
        by_p: dict[int, list[int]] = {}
        for i, c in enumerate(data.cycles):
            by_p.setdefault(c.nobs, []).append(i)
        self.blocks: list[Block] = []
        for p, idx in sorted(by_p.items()):
            cycles = [data.cycles[i] for i in idx]
            has_e = any(c.ensemble_perturbations is not None for c in cycles)
            self.blocks.append(Block(
                index=np.array(idx),
                d=np.stack([c.innovations for c in cycles]),
                sig2=np.stack([c.obs_error ** 2 for c in cycles]),
                gcode=np.stack([self.group_codes(c.obs_group) for c in cycles]).reshape(len(idx), p),
                cs=np.stack([c.static_covariance() for c in cycles]),
                ce=np.stack([c.ensemble_covariance() for c in cycles]) if has_e else None,
                dist=np.stack([data.distances(c) for c in cycles]) if data.distance is not None and has_e else None,
            ))

    # -- factorisation ----------------------------------------------------------------------------
    def states(self, values: Mapping[str, float], derivative: bool = False) -> list[BlockState] | None:
        """Factorise every block at ``values``; None if some :math:`\\mathbf S_k` is not positive definite."""
        c_s, c_e, r, length = self.coefficients(values)
        out = []
        for blk in self.blocks:
            s = c_s * blk.cs
            cel = dcel = None
            if blk.ce is not None:
                if blk.dist is not None and math.isfinite(length):
                    cel = localization(blk.dist, length) * blk.ce
                    if derivative:
                        dcel = localization_log_length_derivative(blk.dist, length) * blk.ce
                else:
                    cel = blk.ce
                    dcel = np.zeros_like(blk.ce) if derivative else None
                s = s + c_e * cel
            diag = r[blk.gcode] * blk.sig2
            p = blk.d.shape[1]
            s[:, np.arange(p), np.arange(p)] += diag
            try:
                chol = np.linalg.cholesky(s)
            except np.linalg.LinAlgError:
                return None
            logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
            sinv = _cholesky_inverse(chol)
            alpha = np.matmul(sinv, blk.d[:, :, None])[:, :, 0]
            out.append(BlockState(blk, s, sinv, alpha, logdet, cel, dcel))
        return out

    def covariances(self, values: Mapping[str, float]) -> list[np.ndarray]:
        """:math:`\\mathbf S_k` of every cycle, in data order."""
        states = self.states(values)
        if states is None:
            raise np.linalg.LinAlgError("an innovation covariance is not positive definite")
        out: list[np.ndarray] = [np.empty(0)] * len(self.data.cycles)
        for st in states:
            for j, i in enumerate(st.block.index):
                out[i] = st.s[j]
        return out

    # -- likelihood -------------------------------------------------------------------------------
    def evaluate(self, phi: np.ndarray, gradient: bool = True, fisher: bool = False) -> Evaluation:
        """:math:`-\\log L`, its gradient and the Fisher information at internal ``phi``."""
        values = self.par.natural(phi)
        states = self.states(values, derivative=gradient or fisher)
        if states is None:
            return Evaluation(math.inf, np.full(self.par.size, np.nan) if gradient else None, None)
        nll = sum(0.5 * (st.logdet.sum() + (st.alpha * st.block.d).sum() + st.block.d.size * LOG_2PI)
                  for st in states)
        ev = Evaluation(float(nll))
        if gradient or fisher:
            jac = self.coefficient_jacobian(values)
            if gradient:
                ev.gradient = jac @ self.basis_gradient(states)
            if fisher:
                ev.fisher = jac @ self.basis_fisher(states) @ jac.T
        return ev

    def _bases(self, st: BlockState) -> list[tuple[int, np.ndarray]]:
        out = [(STATIC_BASIS, st.block.cs)]
        if st.cel is not None:
            out.append((ENSEMBLE_BASIS, st.cel))
            if st.dcel is not None:
                out.append((LENGTH_BASIS, st.dcel))
        return out

    def basis_gradient(self, states: list[BlockState]) -> np.ndarray:
        r""":math:`\tfrac12\sum_k[\mathrm{tr}(\mathbf S^{-1}\mathbf B_b) - \alpha^\mathrm{T}\mathbf B_b\alpha]`
        per basis."""
        g = np.zeros(self.nbases)
        ng = len(self.groups)
        for st in states:
            for b, mat in self._bases(st):
                quadratic = np.matmul(st.alpha[:, None, :], np.matmul(mat, st.alpha[:, :, None])).sum()
                g[b] += 0.5 * (np.vdot(st.sinv, mat) - quadratic)        # tr(S^-1 B) = <S^-1, B> (both symmetric)
            diag_sinv = np.diagonal(st.sinv, axis1=1, axis2=2)
            per_obs = 0.5 * (diag_sinv - st.alpha ** 2) * st.block.sig2
            g[FIRST_GROUP_BASIS:] += np.bincount(st.block.gcode.ravel(), weights=per_obs.ravel(), minlength=ng)
        return g

    def basis_fisher(self, states: list[BlockState]) -> np.ndarray:
        r""":math:`\tfrac12\sum_k\mathrm{tr}(\mathbf S^{-1}\mathbf B_a\mathbf S^{-1}\mathbf B_b)` for all pairs
        of bases."""
        nb, ng = self.nbases, len(self.groups)
        f = np.zeros((nb, nb))
        for st in states:
            bases = self._bases(st)
            m = {b: st.sinv @ mat for b, mat in bases}
            for ia, (a, _) in enumerate(bases):
                for b, _ in bases[ia:]:
                    v = 0.5 * np.vdot(m[a], m[b].transpose(0, 2, 1))    # tr(M_a M_b) = <M_a, M_b^T>
                    f[a, b] += v
                    if a != b:
                        f[b, a] += v
            onehot = np.zeros(st.block.gcode.shape + (ng,))
            np.put_along_axis(onehot, st.block.gcode[..., None], 1.0, axis=-1)
            weighted = onehot * st.block.sig2[..., None]                      # (K, p, G)
            for a, _ in bases:
                diag = np.einsum("kij,kij->ki", m[a], st.sinv)               # (S^-1 B_a S^-1)_ii (S^-1 symmetric)
                v = 0.5 * np.einsum("ki,kig->g", diag, weighted)
                f[a, FIRST_GROUP_BASIS:] += v
                f[FIRST_GROUP_BASIS:, a] += v
            w = st.sinv ** 2
            f[FIRST_GROUP_BASIS:, FIRST_GROUP_BASIS:] += 0.5 * np.matmul(weighted.transpose(0, 2, 1),
                                                                          np.matmul(w, weighted)).sum(axis=0)
        return f

    def whitened_cosines(self, values: Mapping[str, float]) -> dict[str, float]:
        r"""Structural similarity in observation space, pooled over cycles (Frobenius cosines).

        With :math:`\tilde{\mathbf X} = \mathbf R^{-1/2}\mathbf X\mathbf R^{-1/2}`:
        ``"static-ensemble"`` :math:`\cos(\tilde{\mathbf C}_s, \widetilde{L\circ\mathbf C_e})`
        (1: :math:`\mathbf C_e\propto\mathbf C_s`,
        the hybrid weight is not identifiable) with ``"ensemble/static ratio"`` the least-squares factor
        :math:`\kappa` in :math:`L\circ\mathbf C_e \approx \kappa\,\mathbf C_s`; ``"background-identity"``
        :math:`\cos(\tilde{\mathbf B}, \mathbf I)` (1: :math:`\mathbf{HBH}^\mathrm{T}` as white as
        :math:`\mathbf R`, amplitudes of B and R not separable).
        """
        states = self.states(values)
        c_s, c_e, _, _ = self.coefficients(values)
        ss = ee = se = trace_s = trace_e = 0.0
        for st in states or []:
            w = 1.0 / np.sqrt(st.block.sig2)
            ws = st.block.cs * w[:, :, None] * w[:, None, :]
            ss += float((ws * ws).sum())
            trace_s += float(np.trace(ws, axis1=1, axis2=2).sum())
            if st.cel is not None:
                we = st.cel * w[:, :, None] * w[:, None, :]
                ee += float((we * we).sum())
                se += float((ws * we).sum())
                trace_e += float(np.trace(we, axis1=1, axis2=2).sum())
        return whitened_cosine_summary(ss, se, ee, trace_s, trace_e, self.nobs, c_s, c_e)


def whitened_cosine_summary(ss: float, se: float, ee: float, trace_s: float, trace_e: float, nobs: int,
                            c_s: float, c_e: float) -> dict[str, float]:
    r"""The cosines of :meth:`HybridCovarianceModel.whitened_cosines` from the pooled whitened inner products.

    With :math:`\langle\mathbf X, \mathbf Y\rangle = \sum_k\mathrm{tr}(\tilde{\mathbf X}_k\tilde{\mathbf Y}_k)`:
    ``ss`` :math:`= \langle\mathbf C_s, \mathbf C_s\rangle`,
    ``se`` :math:`= \langle\mathbf C_s, L\circ\mathbf C_e\rangle`,
    ``ee`` :math:`= \langle L\circ\mathbf C_e, L\circ\mathbf C_e\rangle`, the traces of :math:`\tilde{\mathbf C}_s` and
    :math:`\widetilde{L\circ\mathbf C_e}`, and
    :math:`\tilde{\mathbf B} = c_s\tilde{\mathbf C}_s + c_e\widetilde{L\circ\mathbf C_e}`, so
    :math:`\|\tilde{\mathbf B}\|^2 = c_s^2\,ss + 2c_sc_e\,se + c_e^2\,ee` and :math:`\|\mathbf I\|^2` = ``nobs``.
    """
    bb = c_s * c_s * ss + 2.0 * c_s * c_e * se + c_e * c_e * ee
    out = {"background-identity": (c_s * trace_s + c_e * trace_e) / math.sqrt(bb * nobs) if bb > 0 else math.nan}
    if ee > 0 and ss > 0:
        out["static-ensemble"] = se / math.sqrt(ss * ee)
        out["ensemble/static ratio"] = se / ss
    return out
