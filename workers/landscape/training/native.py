"""A compiled C kernel for full-batch GD sweeps on the CPU (SCIENCE §1, §6).

The kernel takes one run at a time through a whole chunk of epochs: its weights
(a few KiB) stay in L1 cache, every epoch is the closed-form forward/backward
pass in two passes over blocks of eight neurons (GCC vector types; the gradient
stays in registers and the step is written to a second buffer, swapped with the
first), the stopping rule is checked at every epoch (exact per-run stopping), and
at curve-point epochs it also returns the statistics of the point: mse, loss,
grad_norm_sq, param_norm_sq, the effective rank and the number of distinct
signed cones (branch-free cone codes ORed into one word for n + 1 <= 6, marked
in a table up to n + 1 = 12, or sorted per point). The effective rank comes from
the k×k Gram matrix of W, k = min(m, d) (``W Wᵀ`` or ``Wᵀ W``, O(m d k)): for
k <= ``JACOBI_K`` the kernel takes its eigenvalues itself by round-robin Jacobi
rotations, for k <= ``KERNEL_K`` by Householder tridiagonalisation and implicit
QR steps (Wilkinson shifts); above, it returns the Gram matrices and the host
takes their eigenvalues with LAPACK, batched per chunk
(``training.curves.effective_rank``). At k = 4, batched LAPACK costs about 2 us a
matrix against about 0.4 us for the in-kernel Jacobi; at k = 20 about 17-25 us
against about 2.5 us (tridiagonal) + 9 us (QR) in the kernel, with no hand-back.

The same library holds the sharpness at initialisation (training.sharpness):
Lanczos on the closed-form Hessian-vector product, one run at a time, the top
Ritz value by Newton's method checked with Sturm counts.

With ``stop_on_collapse`` it also stops a run at the first epoch where every
preactivation is <= 0 (``all_inactive``: a scan of Z that exits at the first
positive entry, so a live run pays a few comparisons).

The C source is compiled with the system C compiler at first use (about 0.3 s)
into the kernel cache (training.native_cache: a private directory, owner-checked
before loading, pruned, with the last build's status in ``build-status.json``)
and loaded with ctypes; ctypes releases the GIL, so ``cpu_threads > 1`` splits
the runs over Python threads. Without a compiler, when a build fails or when the
cache is refused, ``load_library`` returns None and the sweep uses the torch path
(training.driver.Sweep).

One build serves a shape family: n and d are compile-time constants (for
d <= SPECIALISE_D; one generic build otherwise) and the width m is a run-time
argument.

Reductions over neurons are written with eight fixed lanes (then the tail in
order), so the order of every sum is fixed: results are bitwise reproducible on
one machine (resume, chunking, threads), and equal the plain numpy loop to
rounding (no -ffast-math; ISO C, so no contraction into FMA).
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from workers.landscape.training import native_cache as kernel_cache
from workers.landscape.training.curves import (
    NEURON_THRESHOLD,
    effective_rank,
    next_record_epoch,
)
from workers.landscape.training.driver import CHUNK, SweepConfig
from workers.landscape.training.native_cache import compiler_command, set_cache_dir
from workers.landscape.training.state import RUNNING, SweepState

__all__ = [
    "MAX_N",
    "NativeSweep",
    "load_library",
    "native_sharpness",
    "set_cache_dir",
    "shape_family",
    "supported",
]

# Largest n for which cone codes fit one uint64 (n bits of x_k . w_j > 0, one sign bit).
MAX_N = 63
# Bytes of curve-point buffers per chunk; a chunk ends early to stay under it.
_RECORD_BYTES = 64 << 20
# Largest k = min(m, d) whose effective rank the kernel computes itself (Jacobi on the
# k x k Gram matrix); above it the kernel returns the Gram matrices and the host takes
# their eigenvalues with LAPACK (training.curves.effective_rank), batched per chunk.
JACOBI_K = 8
# Largest k whose effective rank the kernel computes itself at all: above JACOBI_K by
# Householder tridiagonalisation and implicit QR (O(k^3), about 4/3 k^3 flops); above
# KERNEL_K the Gram matrices go to the host's LAPACK (blocked, faster at large k).
KERNEL_K = 48

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* n and d fixed at compile time when SHAPE_N/D are defined (unrolled loops); the
 * width m is always a run-time value, so one build serves every width. */
#define M_(v) (v)
#ifdef SHAPE_N
#define N_(v) SHAPE_N
#define D_(v) SHAPE_D
#else
#define N_(v) (v)
#define D_(v) (v)
#endif

/* Lanes of a vector block: one register of doubles. 8 where the target has AVX-512;
 * else 4 (AVX2): an 8-lane block on an AVX2 target is split into two registers by the
 * compiler, and the kernel's accumulators then spill to the stack (measured on an AMD
 * EPYC, znver2: 3x slower at n = d = 4, 10x at n = 50, d = 200). -DLANES=4 or 8 chooses.
 * The lanes fix the summation order of the sums over neurons, so results can differ in
 * the last bits between targets with different LANES (as they can with or without FMA). */
#ifndef LANES
#if defined(__AVX512F__)
#define LANES 8
#else
#define LANES 4
#endif
#endif
#if LANES != 4 && LANES != 8
#error "LANES must be 4 or 8"
#endif

/* The sum of the LANES lane accumulators, pairwise in a fixed order. */
static inline double lanes_sum(const double *acc) {
#if LANES == 8
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
#else
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
#endif
}

/* s = sum over j < m of EXPR (j), in a fixed order: LANES accumulators, then the tail. */
#define REDUCE(s, m, EXPR)                                                         \
    do {                                                                           \
        double acc_[LANES] = {0};                                                  \
        int64_t b_ = 0;                                                            \
        for (; b_ + LANES <= (m); b_ += LANES)                                     \
            for (int l_ = 0; l_ < LANES; ++l_) {                                   \
                const int64_t j = b_ + l_;                                         \
                acc_[l_] += (EXPR);                                                \
            }                                                                      \
        s = lanes_sum(acc_);                                                       \
        for (int64_t j = b_; j < (m); ++j) s += (EXPR);                            \
    } while (0)

typedef struct {
    int64_t m, n, d;
    const double *X, *y;
    double lam, lr, tol, threshold;
    int64_t max_epochs;
} Problem;

typedef double vd __attribute__((vector_size(LANES * sizeof(double))));
typedef int64_t vl __attribute__((vector_size(LANES * sizeof(int64_t))));

static inline vd vload(const double *src) {
    vd v;
    memcpy(&v, src, sizeof v);
    return v;
}

static inline void vstore(double *dst, vd v) { memcpy(dst, &v, sizeof v); }

/* v where mask, else +0.0 */
static inline vd vkeep(vl mask, vd v) { return (vd)(mask & (vl)v); }

/* Forward pass over the LANES neurons j0 .. j0 + LANES - 1 of weights stored with row
 * stride m: Z (n, m) and, per point k, acc[k] += a_j relu(z_kj) lane-wise; each z_kj
 * sums over i in order (GCC vector types; no contraction into FMA in ISO C). */
static inline void forward_vec(const Problem *restrict p, const double *restrict W,
                               const double *restrict a, double *restrict Z, int64_t j0,
                               int64_t m, vd *restrict acc) {
    const int64_t n = N_(p->n), d = D_(p->d);
    const vd av = vload(a + j0), zero = {0};
    for (int64_t k = 0; k < n; ++k) {
        const double *x = p->X + k * d;
        vd z = x[0] * vload(W + j0);
        for (int64_t i = 1; i < d; ++i) z += x[i] * vload(W + i * m + j0);
        vstore(Z + k * m + j0, z);
        acc[k] += av * vkeep(z > zero, z);
    }
}

/* Backward pass and GD step over the same block, with r_k = (2/n) residual_k: the
 * gradient (ga_j = 2 lam a_j + sum_k relu(z_kj) r_k, gW_ij = 2 lam W_ij + sum_k
 * 1[z_kj > 0] a_j r_k x_ki, each summed in that order) stays in registers: the step
 * goes to (Wn, an) and the squares of W, a, gW, ga to the lanes of norms[0..3]. */
static inline void backward_vec(const Problem *restrict p, const double *restrict W,
                                const double *restrict a, double *restrict Wn,
                                double *restrict an, const double *restrict Z,
                                const double *restrict r, int64_t j0, int64_t m,
                                vd *restrict norms) {
    const int64_t n = N_(p->n), d = D_(p->d);
    const double twolam = 2.0 * p->lam, lr = p->lr;
    const vd av = vload(a + j0), zero = {0};
    vd G[n > 0 ? n : 1], ga = twolam * av;
    for (int64_t k = 0; k < n; ++k) {
        const vd z = vload(Z + k * m + j0);
        const vl on = z > zero;
        ga += vkeep(on, z) * r[k];
        G[k] = vkeep(on, av * r[k]);
    }
    vstore(an + j0, av - lr * ga);
    norms[1] += av * av;
    norms[3] += ga * ga;
    for (int64_t i = 0; i < d; ++i) {
        const vd w = vload(W + i * m + j0);
        vd gw = twolam * w;
        for (int64_t k = 0; k < n; ++k) gw += G[k] * p->X[k * d + i];
        vstore(Wn + i * m + j0, w - lr * gw);
        norms[0] += w * w;
        norms[2] += gw * gw;
    }
}

/* One epoch at (W, a), W (d, m): the statistics (mse, loss, grad_norm_sq,
 * param_norm_sq) into out4, the preactivations into Z (n, m) and the GD step into
 * (Wn, an), all in two passes over blocks of LANES neurons (the weights, Z and the
 * step stay in L1; the gradient lives in registers). Sums over neurons use the lanes
 * of their block, then the tail in order: a fixed order. */
static void epoch_step(const Problem *p, const double *W, const double *a, double *Wn,
                       double *an, double *Z, double *out4) {
    const int64_t m = M_(p->m), n = N_(p->n), d = D_(p->d);
    const int64_t body = m - m % LANES, rest = m - body;
    const int64_t n1 = n > 0 ? n : 1;
    /* the last rest < LANES neurons go through the same vector code, zero-padded to a
     * block (Wt, at, Zt, Wnt, ant); their sums are kept apart (tacc, tnorms) and added
     * after the lanes, in order */
    vd acc[n1], tacc[n1];
    double Wt[rest ? d * LANES : 1], at[LANES], Zt[rest ? n1 * LANES : 1];
    for (int64_t k = 0; k < n; ++k) acc[k] = tacc[k] = (vd){0};
    for (int64_t b = 0; b < body; b += LANES) forward_vec(p, W, a, Z, b, m, acc);
    if (rest) {
        for (int64_t i = 0; i < d; ++i)
            for (int64_t l = 0; l < LANES; ++l)
                Wt[i * LANES + l] = l < rest ? W[i * m + body + l] : 0.0;
        for (int64_t l = 0; l < LANES; ++l) at[l] = l < rest ? a[body + l] : 0.0;
        forward_vec(p, Wt, at, Zt, 0, LANES, tacc);
        for (int64_t k = 0; k < n; ++k)
            for (int64_t l = 0; l < rest; ++l) Z[k * m + body + l] = Zt[k * LANES + l];
    }
    double r[n1], sq = 0.0;
    for (int64_t k = 0; k < n; ++k) {
        double f = lanes_sum((const double *)&acc[k]);
        for (int64_t l = 0; l < rest; ++l) f += tacc[k][l];
        const double res = f - p->y[k];
        sq += res * res;
        r[k] = (2.0 / (double)n) * res;
    }
    vd norms[4] = {{0}, {0}, {0}, {0}}, tnorms[4] = {{0}, {0}, {0}, {0}};
    for (int64_t b = 0; b < body; b += LANES) backward_vec(p, W, a, Wn, an, Z, r, b, m, norms);
    if (rest) {
        double Wnt[d * LANES], ant[LANES];
        backward_vec(p, Wt, at, Wnt, ant, Zt, r, 0, LANES, tnorms);
        for (int64_t i = 0; i < d; ++i)
            for (int64_t l = 0; l < rest; ++l) Wn[i * m + body + l] = Wnt[i * LANES + l];
        for (int64_t l = 0; l < rest; ++l) an[body + l] = ant[l];
    }
    double sums[4];
    for (int c = 0; c < 4; ++c) {
        sums[c] = lanes_sum((const double *)&norms[c]);
        for (int64_t l = 0; l < rest; ++l) sums[c] += tnorms[c][l];
    }
    const double mse = sq / (double)n, pns = sums[0] + sums[1];
    out4[0] = mse;
    out4[1] = mse + p->lam * pns;
    out4[2] = sums[2] + sums[3];
    out4[3] = pns;
}

/* 1 when no neuron is active on any point (every x_k . w_j <= 0, Z is (n, m)): the
 * data term then has zero gradient and GD only shrinks the weights (collapse). */
static int all_inactive(const Problem *p, const double *Z) {
    const int64_t nm = N_(p->n) * M_(p->m);
    for (int64_t c = 0; c < nm; ++c)
        if (Z[c] > 0.0) return 0;
    return 1;
}

static int cmp_u64(const void *x, const void *y) {
    const uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

/* Eigenvalues of the symmetric tridiagonal matrix (dg (k), off (k - 1)) into dg, by
 * implicit QR steps with the Wilkinson shift of the trailing 2x2 block (the bulge
 * chased down by Givens rotations), deflating an off-diagonal entry once it is below
 * the rounding of its two diagonal neighbours. */
static void tridiagonal_eigenvalues(double *dg, double *off, int64_t k) {
    const double eps = 2.220446049250313e-16;
    int64_t hi = k - 1, steps = 0;
    while (hi > 0) {
        if (fabs(off[hi - 1]) <= eps * (fabs(dg[hi - 1]) + fabs(dg[hi])) || ++steps > 64 * k) {
            off[hi - 1] = 0.0; /* deflate (or give up on a block that does not converge) */
            --hi;
            continue;
        }
        int64_t lo = hi - 1;
        while (lo > 0 && fabs(off[lo - 1]) > eps * (fabs(dg[lo - 1]) + fabs(dg[lo]))) --lo;
        const double half = 0.5 * (dg[hi - 1] - dg[hi]), b = off[hi - 1];
        const double mu = dg[hi] - b * b / (half + copysign(sqrt(half * half + b * b), half));
        double x = dg[lo] - mu, z = off[lo];
        for (int64_t i = lo; i < hi; ++i) {
            /* sqrt, not hypot (several times slower): g is scaled to max |g| = 1 */
            const double r = sqrt(x * x + z * z);
            const double c = r > 0.0 ? x / r : 1.0, sn = r > 0.0 ? -z / r : 0.0;
            if (i > lo) off[i - 1] = r;
            const double a1 = dg[i], a2 = dg[i + 1], bb = off[i];
            dg[i] = c * c * a1 - 2.0 * c * sn * bb + sn * sn * a2;
            dg[i + 1] = sn * sn * a1 + 2.0 * c * sn * bb + c * c * a2;
            off[i] = c * sn * (a1 - a2) + (c * c - sn * sn) * bb;
            if (i + 1 < hi) {
                x = off[i];
                z = -sn * off[i + 1];
                off[i + 1] *= c;
            }
        }
    }
}

/* The symmetric g (k, k; destroyed) reduced to tridiagonal form (dg (k), off (k - 1))
 * by Householder reflections H = I - 2 v vᵀ / vᵀv applied on both sides of the trailing
 * block, column by column (the rank-2 form B - v qᵀ - q vᵀ). */
static void householder_tridiagonal(double *g, int64_t k, double *dg, double *off) {
    double v[k], p[k];
    for (int64_t col = 0; col + 2 < k; ++col) {
        const int64_t s = col + 1, len = k - s;
        double norm2 = 0.0;
        for (int64_t i = 0; i < len; ++i) {
            v[i] = g[(s + i) * k + col];
            norm2 += v[i] * v[i];
        }
        dg[col] = g[col * k + col];
        const double x0 = v[0], alpha = x0 > 0.0 ? -sqrt(norm2) : sqrt(norm2);
        const double vv = 2.0 * (norm2 - alpha * x0); /* |x - alpha e1|^2, no cancellation */
        off[col] = vv > 0.0 ? alpha : x0;
        if (!(vv > 0.0)) continue;
        v[0] = x0 - alpha;
        double pv = 0.0;
        for (int64_t i = 0; i < len; ++i) {
            const double *row = g + (s + i) * k + s;
            double acc = 0.0;
            for (int64_t l = 0; l < len; ++l) acc += row[l] * v[l];
            p[i] = 2.0 * acc / vv;
            pv += p[i] * v[i];
        }
        const double K = pv / vv;
        for (int64_t i = 0; i < len; ++i) p[i] -= K * v[i];
        for (int64_t i = 0; i < len; ++i) {
            double *row = g + (s + i) * k + s;
            for (int64_t l = 0; l < len; ++l) row[l] -= v[i] * p[l] + p[i] * v[l];
        }
    }
    if (k >= 2) {
        dg[k - 2] = g[(k - 2) * k + k - 2];
        off[k - 2] = g[(k - 1) * k + k - 2];
    }
    dg[k - 1] = g[(k - 1) * k + k - 1];
}

/* exp of the entropy of the normalised singular values sqrt(ev) (k of them). */
static double rank_from_eigenvalues(const double *ev, int64_t k) {
    double total = 0.0;
    for (int64_t c = 0; c < k; ++c) total += sqrt(ev[c] > 0.0 ? ev[c] : 0.0);
    if (!(total > 0.0)) return 0.0;
    double entropy = 0.0;
    for (int64_t c = 0; c < k; ++c) {
        const double pk = sqrt(ev[c] > 0.0 ? ev[c] : 0.0) / total;
        if (pk > 0.0) entropy -= pk * log(pk);
    }
    return exp(entropy);
}

/* exp of the entropy of the normalised singular values of W, from its Gram matrix
 * g (d, d; destroyed; see small_gram): by cyclic Jacobi rotations when d <= jacobi_k,
 * else by Householder tridiagonalisation and implicit QR; 0 for W = 0, NaN if not
 * finite. Used for d up to a bound (O(d^3) per point); larger ones go to LAPACK. */
static inline double effective_rank(double *g, int64_t d, int64_t jacobi_k) {
    double top = 0.0; /* the rank is scale-invariant: normalise by max |g| */
    for (int64_t c = 0; c < d * d; ++c) {
        if (!isfinite(g[c])) return NAN;
        top = fabs(g[c]) > top ? fabs(g[c]) : top;
    }
    if (!(top > 0.0)) return 0.0;
    for (int64_t c = 0; c < d * d; ++c) g[c] /= top;
    if (d > jacobi_k) {
        double dg[d], off[d];
        householder_tridiagonal(g, d, dg, off);
        tridiagonal_eigenvalues(dg, off, d);
        return rank_from_eigenvalues(dg, d);
    }
    /* round-robin order: the two rotations of a pair of disjoint (p, q) are independent,
     * so their divisions and square roots overlap in the pipeline */
    const int64_t even = d + (d & 1);
    int64_t order[even];
    for (int64_t c = 0; c < even; ++c) order[c] = c;
    for (int sweep = 0; sweep < 64; ++sweep) {
        int rotated = 0;
        for (int64_t round = 0; round + 1 < even; ++round) {
            for (int64_t h = 0; h < even / 2; ++h) {
                int64_t p = order[h], q = order[even - 1 - h];
                if (p >= d || q >= d) continue;
                if (p > q) {
                    const int64_t swap = p;
                    p = q, q = swap;
                }
                const double apq = g[p * d + q], app = g[p * d + p], aqq = g[q * d + q];
                /* negligible against the diagonal: (relative accuracy, PSD input) */
                if (apq * apq <= 1e-34 * fabs(app * aqq) || fabs(apq) < 1e-300) {
                    g[p * d + q] = g[q * d + p] = 0.0;
                    continue;
                }
                rotated = 1;
                const double theta = (aqq - app) / (2.0 * apq);
                const double t =
                    (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                const double c = 1.0 / sqrt(t * t + 1.0), sn = t * c;
                g[p * d + p] = app - t * apq;
                g[q * d + q] = aqq + t * apq;
                g[p * d + q] = g[q * d + p] = 0.0;
                for (int64_t r = 0; r < d; ++r) { /* rows and columns p, q (symmetric) */
                    if (r == p || r == q) continue;
                    const double grp = g[r * d + p], grq = g[r * d + q];
                    g[r * d + p] = g[p * d + r] = c * grp - sn * grq;
                    g[r * d + q] = g[q * d + r] = sn * grp + c * grq;
                }
            }
            const int64_t last = order[even - 1];
            for (int64_t c = even - 1; c > 1; --c) order[c] = order[c - 1];
            order[1] = last;
        }
        if (!rotated) break;
    }
    double ev[d];
    for (int64_t c = 0; c < d; ++c) ev[c] = g[c * d + c];
    return rank_from_eigenvalues(ev, d);
}

/* The Gram matrix of W (d, m) in its smaller orientation, k = min(d, m), into g (k, k):
 * W Wᵀ when d <= m, else Wᵀ W (the same non-zero eigenvalues); O(m d k). */
static void small_gram(const double *W, int64_t m, int64_t d, double *g) {
    if (d <= m) {
        for (int64_t i1 = 0; i1 < d; ++i1)
            for (int64_t i2 = 0; i2 <= i1; ++i2) {
                const double *u = W + i1 * m, *v = W + i2 * m;
                double s;
                REDUCE(s, m, u[j] * v[j]);
                g[i1 * d + i2] = g[i2 * d + i1] = s;
            }
        return;
    }
    /* m < d: rows j1 in groups of GRAM_ROWS (independent sums, so the adds overlap),
     * each with the blocks of LANES columns that reach the group's last diagonal entry,
     * every entry summed over i in order; then the lower triangle mirrored. A block
     * load may run past row i's end into row i + 1 (those lanes are not stored); the
     * rows where it would run past W's end load a zero-padded copy instead. */
    enum { GRAM_ROWS = 4 };
    for (int64_t j1 = 0; j1 < m; j1 += GRAM_ROWS) {
        const int64_t rows = m - j1 < GRAM_ROWS ? m - j1 : GRAM_ROWS;
        for (int64_t b = 0; b < j1 + rows; b += LANES) {
            const int64_t L = m - b < LANES ? m - b : LANES;
            const int64_t tail = d * m - b - LANES; /* last start of a full load */
            const int64_t safe = tail < 0 ? 0 : (tail / m + 1 < d ? tail / m + 1 : d);
            vd acc[GRAM_ROWS] = {{0}};
            for (int64_t i = 0; i < d; ++i) {
                vd w = {0};
                if (i < safe)
                    w = vload(W + i * m + b);
                else
                    memcpy(&w, W + i * m + b, sizeof(double) * (size_t)L);
                for (int64_t q = 0; q < GRAM_ROWS; ++q)
                    acc[q] += (q < rows ? W[i * m + j1 + q] : 0.0) * w;
            }
            for (int64_t q = 0; q < rows; ++q)
                for (int64_t l = 0; l < L; ++l) g[(j1 + q) * m + b + l] = acc[q][l];
        }
    }
    for (int64_t j1 = 0; j1 < m; ++j1)
        for (int64_t j2 = j1 + 1; j2 < m; ++j2) g[j1 * m + j2] = g[j2 * m + j1];
}

/* Curve statistics at (W, a) after evaluate: the number of distinct signed cones
 * into stats[5], the Gram matrix of W into g (k, k; see small_gram) and, when
 * k <= kernel_k, the effective rank into stats[4] (else NaN there: the host takes
 * the eigenvalues of g with LAPACK). codes (m) is scratch. */
static void point(const Problem *p, const double *W, const double *a, const double *Z,
                  int64_t jacobi_k, int64_t kernel_k, uint64_t *codes, double *g,
                  double *stats) {
    const int64_t m = M_(p->m), n = N_(p->n), d = D_(p->d);
    /* branch-free codes, row by row (signs of Z are random: branches mispredict) */
    double *w2 = g; /* m entries of scratch before g holds the Gram matrix */
    for (int64_t j = 0; j < m; ++j) w2[j] = W[j] * W[j];
    for (int64_t i = 1; i < d; ++i)
        for (int64_t j = 0; j < m; ++j) w2[j] += W[i * m + j] * W[i * m + j];
    for (int64_t j = 0; j < m; ++j) codes[j] = (uint64_t)(a[j] < 0.0) << n;
    for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < m; ++j) codes[j] |= (uint64_t)(Z[k * m + j] > 0.0) << k;
    int64_t distinct = 0;
    if (n + 1 <= 6) { /* all 2^(n+1) codes are bits of one word: an OR, no compaction */
        uint64_t word = 0;
        for (int64_t j = 0; j < m; ++j)
            word |= (uint64_t)(a[j] * a[j] * w2[j] > p->threshold) << codes[j];
        distinct = __builtin_popcountll(word);
    } else {
        int64_t count = 0;
        for (int64_t j = 0; j < m; ++j) {
            codes[count] = codes[j];
            count += a[j] * a[j] * w2[j] > p->threshold;
        }
        if (n + 1 <= 12) { /* a table of all 2^(n+1) codes */
            uint64_t table[64] = {0};
            for (int64_t c = 0; c < count; ++c)
                table[codes[c] >> 6] |= (uint64_t)1 << (codes[c] & 63);
            for (int64_t w = 0; w < ((int64_t)1 << (n + 1)) / 64; ++w)
                distinct += __builtin_popcountll(table[w]);
        } else {
            qsort(codes, (size_t)count, sizeof(uint64_t), cmp_u64);
            distinct = count > 0;
            for (int64_t c = 1; c < count; ++c) distinct += codes[c] != codes[c - 1];
        }
    }
    stats[5] = (double)distinct;
    const int64_t k = d < m ? d : m;
    small_gram(W, m, d, g);
    if (k > kernel_k)
        stats[4] = NAN;
    else /* d is a compile-time constant in the specialised builds */
        stats[4] = k == d ? effective_rank(g, d, jacobi_k) : effective_rank(g, k, jacobi_k);
}

/*
 * Runs r in [r0, r1) with status[r] == 0 (running) take epochs start..end-1.
 * At each epoch e: evaluate; if e == rec_epochs[q], write point q of run r;
 * stop (status 1 converged, 2 max_epochs, 3 diverged, 4 collapsed; final
 * statistics written) when the loss or gradient is not finite, grad_norm_sq <
 * tol, every neuron is inactive on all data (when collapse != 0) or e ==
 * max_epochs, with that precedence; otherwise update. epoch[r] ends at the stop
 * epoch or end.
 * W (R, d, m), a (R, m); statistics (mse, loss, grad_norm_sq, param_norm_sq,
 * effective_rank, num_neurons): rec_stats (R, K, 6), final_stats (R, 6). When
 * k = min(m, d) > max(jacobi_k, kernel_k), the effective rank is left NaN and the Gram matrices of
 * the points go to rec_grams (R, K, k, k) and final_grams (R, k, k) instead.
 * Returns 0, or -1 if out of memory.
 */
int gd_chunk(int64_t r0, int64_t r1, int64_t m, int64_t n, int64_t d, const double *X,
             const double *y, double lam, double lr, double tol, double threshold,
             int64_t max_epochs, int64_t collapse, double *W, double *a, int64_t *epoch,
             int8_t *status, int64_t start, int64_t end, const int64_t *rec_epochs, int64_t K,
             double *rec_stats, double *final_stats, int64_t jacobi_k, int64_t kernel_k,
             double *rec_grams, double *final_grams) {
    if (jacobi_k > kernel_k) kernel_k = jacobi_k;
    m = M_(m), n = N_(n), d = D_(d);
    const Problem p = {m, n, d, X, y, lam, lr, tol, threshold, max_epochs};
    const int64_t k = d < m ? d : m, kk = k * k;
    double *work = malloc(sizeof(double) * (size_t)((n + 2 * d + 2) * m + kk + m + 1));
    uint64_t *codes = malloc(sizeof(uint64_t) * (size_t)(m + 1));
    if (!work || !codes) { free(work); free(codes); return -1; }
    double *Z = work, *Wb = Z + n * m, *ab = Wb + d * m, *g = ab + m;
    for (int64_t r = r0; r < r1; ++r) {
        if (status[r] != 0) continue;
        double *Wr = W + r * d * m, *ar = a + r * m;
        double *Wc = Wr, *ac = ar, *Wn = Wb, *an = ab; /* current and next weights */
        int64_t q = 0, e = start;
        while (q < K && rec_epochs[q] < start) ++q;
        for (; e < end; ++e) {
            double s[6];
            epoch_step(&p, Wc, ac, Wn, an, Z, s);
            const int finite = isfinite(s[1]) && isfinite(s[2]);
            const int dead = finite && s[2] >= tol && collapse && all_inactive(&p, Z);
            const int alive = finite && s[2] >= tol && !dead && e < max_epochs;
            const int record = q < K && rec_epochs[q] == e;
            if (record || !alive) point(&p, Wc, ac, Z, jacobi_k, kernel_k, codes, g, s);
            if (record) {
                for (int c = 0; c < 6; ++c) rec_stats[(r * K + q) * 6 + c] = s[c];
                if (k > kernel_k)
                    for (int64_t c = 0; c < kk; ++c) rec_grams[(r * K + q) * kk + c] = g[c];
                ++q;
            }
            if (!alive) {
                for (int c = 0; c < 6; ++c) final_stats[r * 6 + c] = s[c];
                if (k > kernel_k)
                    for (int64_t c = 0; c < kk; ++c) final_grams[r * kk + c] = g[c];
                status[r] = !finite ? 3 : (s[2] < tol ? 1 : (dead ? 4 : 2));
                break;
            }
            double *t = Wc; /* the step was taken into (Wn, an): swap */
            Wc = Wn, Wn = t;
            t = ac, ac = an, an = t;
        }
        if (Wc != Wr) {
            memcpy(Wr, Wc, sizeof(double) * (size_t)(d * m));
            memcpy(ar, ac, sizeof(double) * (size_t)m);
        }
        epoch[r] = e;
    }
    free(work);
    free(codes);
    return 0;
}
/* ---- Sharpness at a run's initial point (training.sharpness): Lanczos on the
 * closed-form Hessian-vector product, one run at a time (its weights in L1). Vectors
 * are (w, d + 1): row j holds v_j then b_j. */

/* Eigenvalues of the tridiagonal (alpha (t), beta (t - 1)) below x (Sturm count). */
static int64_t sturm_below(const double *alpha, const double *beta, int64_t t, double x,
                           double pivmin) {
    int64_t count = 0;
    double piv = 1.0, b2 = 0.0;
    for (int64_t i = 0; i < t; ++i) {
        piv = (alpha[i] - x) - (i > 0 ? b2 / piv : 0.0);
        if (fabs(piv) < pivmin) piv = -pivmin;
        count += piv < 0.0;
        if (i + 1 < t) b2 = beta[i] * beta[i];
    }
    return count;
}

/* Largest eigenvalue of the tridiagonal (alpha (t), beta (t - 1)): Newton's method on
 * its characteristic polynomial from the Gershgorin bound above (all roots real, so the
 * iterates decrease monotonically to the largest one), the polynomial's log-derivative
 * from the LDLᵀ pivots; accepted when a Sturm count brackets it within a few ulps,
 * else by bisection (tridiagonal_top_bisection). */
static double tridiagonal_top_bisection(const double *alpha, const double *beta, int64_t t);

static double tridiagonal_top(const double *alpha, const double *beta, int64_t t) {
    double x = -INFINITY, b2max = 1.0;
    for (int64_t i = 0; i < t; ++i) {
        const double left = i > 0 ? fabs(beta[i - 1]) : 0.0;
        const double right = i + 1 < t ? fabs(beta[i]) : 0.0;
        x = alpha[i] + left + right > x ? alpha[i] + left + right : x;
        if (i + 1 < t && beta[i] * beta[i] > b2max) b2max = beta[i] * beta[i];
    }
    const double eps = 2.220446049250313e-16, pivmin = 2.2250738585072014e-308 * b2max;
    x += 4.0 * eps * fabs(x) + pivmin;
    for (int it = 0; it < 200; ++it) {
        double piv = 1.0, dpiv = 0.0, slope = 0.0; /* slope = sum dpiv_i / piv_i */
        int ok = 1;
        for (int64_t i = 0; i < t; ++i) {
            const double b2 = i > 0 ? beta[i - 1] * beta[i - 1] : 0.0, inv = 1.0 / piv;
            dpiv = i > 0 ? -1.0 + b2 * dpiv * inv * inv : -1.0;
            piv = (alpha[i] - x) - b2 * inv;
            if (!(fabs(piv) > pivmin)) {
                ok = 0;
                break;
            }
            slope += dpiv / piv;
        }
        if (!ok || !(slope < 0.0)) break;
        const double step = -1.0 / slope; /* x - p / p' with p / p' = 1 / slope */
        if (!(step > 0.0)) break;
        x -= step;
        if (step <= 2.0 * eps * fabs(x) + pivmin) {
            const double tol = 8.0 * eps * fabs(x) + pivmin;
            if (sturm_below(alpha, beta, t, x + tol, pivmin) == t &&
                sturm_below(alpha, beta, t, x - tol, pivmin) < t)
                return x;
            break;
        }
    }
    return tridiagonal_top_bisection(alpha, beta, t);
}

static double tridiagonal_top_bisection(const double *alpha, const double *beta, int64_t t) {
    double lo = alpha[0], hi = -INFINITY, b2max = 1.0;
    for (int64_t i = 0; i < t; ++i) {
        const double left = i > 0 ? fabs(beta[i - 1]) : 0.0;
        const double right = i + 1 < t ? fabs(beta[i]) : 0.0;
        lo = alpha[i] > lo ? alpha[i] : lo;
        hi = alpha[i] + left + right > hi ? alpha[i] + left + right : hi;
        if (i + 1 < t && beta[i] * beta[i] > b2max) b2max = beta[i] * beta[i];
    }
    const double pivmin = 2.2250738585072014e-308 * b2max;
    hi += 4.0 * 2.220446049250313e-16 * (fabs(hi) + fabs(lo)) + pivmin;
    for (int grow = 0; grow < 64 && sturm_below(alpha, beta, t, hi, pivmin) < t; ++grow)
        hi += fabs(hi) + 1.0;
    for (int it = 0; it < 256; ++it) {
        if (hi - lo <= 2.0 * 2.220446049250313e-16 * fmax(fabs(lo), fabs(hi)) + pivmin) break;
        const double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        if (sturm_below(alpha, beta, t, mid, pivmin) == t)
            hi = mid;
        else
            lo = mid;
    }
    return 0.5 * (lo + hi);
}

static double dot_vec(const double *u, const double *v, int64_t len) {
    double s;
    REDUCE(s, len, u[j] * v[j]);
    return s;
}

static void unit_vec(double *u, int64_t len) {
    const double norm = sqrt(dot_vec(u, u, len));
    if (norm > 0.0)
        for (int64_t c = 0; c < len; ++c) u[c] /= norm;
}

/* out = Hessian of L at the point times q, with H = relu(Z), Sa = 1[Z > 0] a and
 * Sres = 1[Z > 0] res, each (n, w); dZ (n, w), dres (n) and coef (w) are scratch.
 * Vectors are (d + 1, w): row i < d holds the i-th inner coordinate of every neuron,
 * row d the outer weights; the inner loops run over neurons. */
static inline void hessian_product(int64_t w, int64_t n, int64_t d, const double *X,
                                   double lam, const double *H, const double *Sa,
                                   const double *Sres, const double *q, double *out,
                                   double *dZ, double *dres, double *coef) {
    const double c = 2.0 / (double)n;
    const double *b = q + d * w;
    double *ob = out + d * w;
    for (int64_t j = 0; j < w; ++j) ob[j] = 0.0;
    for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < w; ++j) out[i * w + j] = 0.0;
    for (int64_t k = 0; k < n; ++k) {
        const double *x = X + k * d, *Hk = H + k * w, *Sak = Sa + k * w, *Srk = Sres + k * w;
        double *dz = dZ + k * w;
        for (int64_t j = 0; j < w; ++j) dz[j] = x[0] * q[j];
        for (int64_t i = 1; i < d; ++i)
            for (int64_t j = 0; j < w; ++j) dz[j] += x[i] * q[i * w + j];
        REDUCE(dres[k], w, Hk[j] * b[j] + Sak[j] * dz[j]);
        const double dr = dres[k];
        for (int64_t j = 0; j < w; ++j) {
            ob[j] += dr * Hk[j] + Srk[j] * dz[j];
            coef[j] = dr * Sak[j] + Srk[j] * b[j];
        }
        for (int64_t i = 0; i < d; ++i)
            for (int64_t j = 0; j < w; ++j) out[i * w + j] += coef[j] * x[i];
    }
    for (int64_t c2 = 0; c2 < (d + 1) * w; ++c2) out[c2] = c * out[c2] + 2.0 * lam * q[c2];
}

/* Top Ritz value of Lanczos on the Hessian at the run's point (W (d, w) with row stride
 * m, a (w)), from unit(unit(gradient) + share unit(start)), start (d + 1, w) with row
 * stride m; stops when the value moved by at most rtol relative over `every` steps,
 * after max_steps, or when the Krylov space is exhausted. NaN when a diagonal entry is
 * not finite. */
static inline double run_sharpness(int64_t w, int64_t m, int64_t n, int64_t d,
                                   const double *X, const double *y, double lam,
                                   const double *W, const double *a, const double *start,
                                   double share, int64_t max_steps, double rtol,
                                   int64_t every, double *work) {
    const int64_t e = d + 1, len = w * e;
    double *H = work, *Sa = H + w * n, *Sres = Sa + w * n, *dZ = Sres + w * n;
    double *dres = dZ + w * n, *res = dres + n, *q = res + n, *qp = q + len, *v = qp + len;
    double *coef = v + len, *alpha = coef + w, *beta = alpha + max_steps;
    const double c = 2.0 / (double)n;
    for (int64_t k = 0; k < n; ++k) {
        const double *x = X + k * d;
        double *Hk = H + k * w;
        for (int64_t j = 0; j < w; ++j) Hk[j] = x[0] * W[j];
        for (int64_t i = 1; i < d; ++i)
            for (int64_t j = 0; j < w; ++j) Hk[j] += x[i] * W[i * m + j];
        for (int64_t j = 0; j < w; ++j) {
            const double z = Hk[j];
            Hk[j] = z > 0.0 ? z : 0.0;
            Sa[k * w + j] = z > 0.0 ? a[j] : 0.0;
        }
        double f;
        REDUCE(f, w, Hk[j] * a[j]);
        res[k] = f - y[k];
    }
    /* the gradient into q, the start into v */
    for (int64_t c2 = 0; c2 < len; ++c2) q[c2] = 0.0;
    for (int64_t k = 0; k < n; ++k) {
        const double *x = X + k * d, *Hk = H + k * w;
        double *Srk = Sres + k * w;
        for (int64_t j = 0; j < w; ++j) {
            Srk[j] = Hk[j] > 0.0 ? res[k] : 0.0;
            q[d * w + j] += Srk[j] * Hk[j];
            coef[j] = Srk[j] * a[j];
        }
        for (int64_t i = 0; i < d; ++i)
            for (int64_t j = 0; j < w; ++j) q[i * w + j] += coef[j] * x[i];
    }
    for (int64_t i = 0; i < e; ++i)
        for (int64_t j = 0; j < w; ++j) {
            const double p = i < d ? W[i * m + j] : a[j];
            q[i * w + j] = c * q[i * w + j] + 2.0 * lam * p;
            v[i * w + j] = start[i * m + j];
        }
    unit_vec(q, len);
    unit_vec(v, len);
    for (int64_t c2 = 0; c2 < len; ++c2) q[c2] += share * v[c2];
    unit_vec(q, len);
    for (int64_t c2 = 0; c2 < len; ++c2) qp[c2] = 0.0;
    double b = 0.0, scale = 0.0, previous = INFINITY;
    const int64_t steps = max_steps < len ? max_steps : len;
    int64_t t = 0;
    while (t < steps) {
        hessian_product(w, n, d, X, lam, H, Sa, Sres, q, v, dZ, dres, coef);
        const double al = dot_vec(q, v, len);
        if (!isfinite(al)) return NAN;
        for (int64_t c2 = 0; c2 < len; ++c2) v[c2] -= al * q[c2] + b * qp[c2];
        alpha[t] = al;
        scale = fabs(al) > scale ? fabs(al) : scale;
        b = sqrt(dot_vec(v, v, len));
        ++t;
        if (!(b > 1e-12 * scale) || t >= len) break; /* Krylov space exhausted */
        beta[t - 1] = b;
        for (int64_t c2 = 0; c2 < len; ++c2) {
            qp[c2] = q[c2];
            q[c2] = v[c2] / b;
        }
        if (t % every == 0) {
            const double top = tridiagonal_top(alpha, beta, t);
            if (fabs(top - previous) <= rtol * fabs(top)) return top;
            previous = top;
        }
    }
    return tridiagonal_top(alpha, beta, t);
}

/* Sharpness of runs r in [r0, r1): W (R, d, m), a (R, m), start (R, d + 1, m), run r
 * using its first widths[r] neurons; into out[r]. Returns 0, or -1 if out of memory. */
int sharpness(int64_t r0, int64_t r1, int64_t m, int64_t n, int64_t d, const double *X,
              const double *y, double lam, const double *W, const double *a,
              const double *start, const int64_t *widths, double share, int64_t max_steps,
              double rtol, int64_t every, double *out) {
    n = N_(n), d = D_(d);
    const int64_t e = d + 1;
    double *work = malloc(sizeof(double) * (size_t)(4 * m * n + 2 * n + 3 * m * e + m
                                                    + 2 * max_steps + 1));
    if (!work) return -1;
    for (int64_t r = r0; r < r1; ++r)
        out[r] = widths[r] > 0 ? run_sharpness(widths[r], m, n, d, X, y, lam, W + r * d * m,
                                               a + r * m, start + r * e * m, share,
                                               max_steps, rtol, every, work)
                               : NAN;
    free(work);
    return 0;
}
"""

_FLAGS = ("-O3", "-funroll-loops", "-march=native", "-shared", "-fPIC", "-std=c11")
# Largest d for which a build is specialised to (n, d); larger d share one generic build.
SPECIALISE_D = 32
_lock = threading.Lock()
_libraries: dict[str, ctypes.CDLL | None] = {}


def shape_family(n: int, d: int) -> tuple[str, list[str]]:
    """The build that serves data (n, d) at every width: its name and its -D flags."""
    if n <= MAX_N and d <= SPECIALISE_D:
        return f"n{n}_d{d}", [f"-DSHAPE_N={n}", f"-DSHAPE_D={d}"]
    return "generic", []


def load_library(n: int, d: int, m: int, *, for_training: bool = True) -> ctypes.CDLL | None:
    """The kernel for data (n, d) at width m (``m`` does not select the build), built at
    first use into the kernel cache (training.native_cache); None when it cannot be
    built or loaded, when the cache is refused, or when the environment sets
    BENIGNITY_TRAINING_NATIVE=0 (which picks the torch training path; the sharpness,
    ``for_training=False``, uses the kernel whichever path trains)."""
    if for_training and os.environ.get("BENIGNITY_TRAINING_NATIVE", "1") == "0":
        return None
    family, defines = shape_family(n, d)
    with _lock:
        if family in _libraries:
            return _libraries[family]
        _libraries[family] = None
        compiler = compiler_command()
        if compiler is None:
            return None
        lib = kernel_cache.load(_SOURCE, [*compiler, *_FLAGS, *defines], family)
        if lib is None:
            return None
        i64, f64, ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
        lib.gd_chunk.restype = ctypes.c_int
        lib.gd_chunk.argtypes = [i64] * 5 + [ptr] * 2 + [f64] * 4 + [i64] * 2 + [ptr] * 4
        lib.gd_chunk.argtypes += [i64, i64, ptr, i64, ptr, ptr, i64, i64, ptr, ptr]
        lib.sharpness.restype = ctypes.c_int
        lib.sharpness.argtypes = [i64] * 5 + [ptr] * 2 + [f64] + [ptr] * 4
        lib.sharpness.argtypes += [f64, i64, f64, i64, ptr]
        _libraries[family] = lib
        return lib


def supported(n: int, optimizer: str, device: torch.device) -> bool:
    """Whether a sweep can run on the native kernel (CPU, full-batch GD, n <= 63)."""
    return device.type == "cpu" and optimizer == "gd" and n <= MAX_N


class NativeSweep:
    """Full-batch GD sweep on the C kernel, with the interface of training.driver.Sweep.

    The running runs' weights live in a (R, d, m) working copy; the state gets
    them at ``sync_state`` and when a run stops. Curve points, final statistics
    and the schedule are those of the torch path (chunks end at multiples of
    ``CHUNK`` epochs, or earlier when a chunk's curve points would exceed
    ``_RECORD_BYTES``); the results do not depend on where chunks end.

    Args:
        lib: from ``load_library``.
        X: (n, d) float64 data. y: (n,) float64 labels.
        state: the sweep state (fresh or resumed); updated in place.
        config: a training.driver.SweepConfig with optimizer "gd".
        cpu_threads: threads over which the runs are split (-1: torch's count).
    """

    def __init__(
        self,
        lib: ctypes.CDLL,
        X: np.ndarray,
        y: np.ndarray,
        state: SweepState,
        config: SweepConfig,
        *,
        cpu_threads: int = 1,
    ) -> None:
        self.lib, self.state, self.config = lib, state, config
        self.X, self.y = np.ascontiguousarray(X), np.ascontiguousarray(y)
        self.n, self.d = X.shape
        self.m = state.W.shape[1]
        self.W = np.ascontiguousarray(state.W.transpose(0, 2, 1))  # (R, d, m)
        self.a = np.ascontiguousarray(state.a, dtype=np.float64).copy()
        self.epoch = state.epoch.astype(np.int64).copy()
        self.status = state.status.astype(np.int8).copy()
        threads = torch.get_num_threads() if cpu_threads == -1 else max(1, cpu_threads)
        self.threads = min(threads, len(self.status))

    def has_running(self) -> bool:
        """Whether any run is still training."""
        return bool(np.any(self.status == RUNNING))

    def advance_chunk(self) -> None:
        """Step to the next chunk boundary, record curve points, finalise stopped runs."""
        st, cfg = self.state, self.config
        start = st.global_epoch
        end = min(start + CHUNK - start % CHUNK, cfg.max_epochs + 1)
        running = np.flatnonzero(self.status == RUNNING)
        k = min(self.m, self.d)
        kk = k * k if k > max(JACOBI_K, KERNEL_K) else 0  # Gram entries handed back per point
        per_point = max(1, running.size) * (6 + kk) * 8
        limit = max(1, _RECORD_BYTES // per_point)
        epochs: list[int] = []
        e = st.next_record
        while e < end:
            if len(epochs) == limit:
                end = e
                break
            epochs.append(e)
            e = next_record_epoch(e, cfg.log_growth)
        st.next_record = e
        R, K = len(self.status), len(epochs)
        rec_epochs = np.array(epochs, dtype=np.int64)
        rec_stats = np.empty((R, max(K, 1), 6))
        final_stats = np.full((R, 6), np.nan)
        rec_grams = np.empty((R, max(K, 1), kk))  # pages untouched unless kk > 0
        final_grams = np.empty((R, kk))
        self._run(start, end, rec_epochs, rec_stats, final_stats, rec_grams, final_grams)
        st.global_epoch = end
        if K:
            # run r has point q when it was running and had not stopped before epoch q
            mask = rec_epochs[:, None] <= self.epoch[None, running]  # (K, running)
            rows, cols = np.nonzero(mask)
            ids = running[cols]
            stats = rec_stats[ids, rows]
            if kk:
                stats[:, 4] = _effective_ranks(rec_grams[ids, rows], k)
            st.add_points(ids, rec_epochs[rows], stats)
        stopped = running[self.status[running] != RUNNING]
        if stopped.size:
            stats = final_stats[stopped]
            if kk:
                stats[:, 4] = _effective_ranks(final_grams[stopped], k)
            self._finalise(stopped, stats)

    def _run(self, start: int, end: int, *buffers: np.ndarray) -> None:
        cfg = self.config
        fixed = (
            self.m, self.n, self.d, self.X.ctypes.data, self.y.ctypes.data,
            cfg.weight_decay, cfg.lr, cfg.grad_tol, NEURON_THRESHOLD**2,
            cfg.max_epochs, int(cfg.detects_collapse), self.W.ctypes.data, self.a.ctypes.data,
            self.epoch.ctypes.data, self.status.ctypes.data, start, end,
            buffers[0].ctypes.data, buffers[0].size, buffers[1].ctypes.data,
            buffers[2].ctypes.data, JACOBI_K, KERNEL_K, buffers[3].ctypes.data,
            buffers[4].ctypes.data,
        )  # fmt: skip

        def call(bounds: tuple[int, int]) -> int:
            return int(self.lib.gd_chunk(*bounds, *fixed))

        R = len(self.status)
        if self.threads <= 1:
            codes = [call((0, R))]
        else:
            cuts = np.linspace(0, R, self.threads + 1).astype(int)
            with ThreadPoolExecutor(self.threads) as pool:
                codes = list(pool.map(call, zip(cuts[:-1], cuts[1:], strict=True)))
        if any(codes):
            raise MemoryError("training kernel could not allocate its work buffers")

    def _finalise(self, ids: np.ndarray, stats: np.ndarray) -> None:
        st = self.state
        st.epoch[ids] = self.epoch[ids]
        st.W[ids] = self.W[ids].transpose(0, 2, 1)
        st.a[ids] = self.a[ids]
        st.final[ids] = stats
        st.status[ids] = self.status[ids]
        new = st.last_point[ids] != st.epoch[ids]
        st.add_points(ids[new], st.epoch[ids][new], stats[new])

    def sync_state(self) -> SweepState:
        """Copy the running runs' weights and epochs into the state and return it."""
        st = self.state
        ids = np.flatnonzero(self.status == RUNNING)
        if ids.size:
            st.W[ids] = self.W[ids].transpose(0, 2, 1)
            st.a[ids] = self.a[ids]
            st.epoch[ids] = self.epoch[ids]
        return st


def _effective_ranks(grams: np.ndarray, k: int) -> np.ndarray:
    """Effective ranks from flattened (P, k * k) Gram matrices: batched LAPACK eigvalsh."""
    return effective_rank(torch.from_numpy(grams.reshape(-1, k, k))).numpy()


def native_sharpness(
    lib: ctypes.CDLL,
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    W: np.ndarray,
    a: np.ndarray,
    widths: np.ndarray,
    start: np.ndarray,
    *,
    share: float,
    max_steps: int,
    rtol: float,
    every: int,
) -> np.ndarray:
    """(R,) sharpness by the kernel's per-run Lanczos (see training.sharpness): W (R, m, d),
    a (R, m), start (R, m, d + 1) the random part of the start vectors, run r using its
    first widths[r] neurons. The kernel takes W and start neuron-inner: (R, d, m) and
    (R, d + 1, m)."""
    R, m, d = W.shape
    arrays = [
        np.ascontiguousarray(t, dtype=np.float64)
        for t in (X, y, W.transpose(0, 2, 1), a, start.transpose(0, 2, 1))
    ]
    widths = np.ascontiguousarray(widths, dtype=np.int64)
    out = np.full(R, np.nan)
    code = lib.sharpness(
        0, R, m, X.shape[0], d, arrays[0].ctypes.data, arrays[1].ctypes.data,
        float(weight_decay), *(t.ctypes.data for t in arrays[2:]), widths.ctypes.data,
        share, max_steps, rtol, every, out.ctypes.data,
    )  # fmt: skip
    if code:
        raise MemoryError("sharpness kernel could not allocate its work buffers")
    return out
