//! L2-regularised logistic regression, solved to convergence with L-BFGS: the linear head of a classifier.
//!
//! The objective over `n` rows of `d` features and `c` classes is
//! `(1/n) Σ_i loss(x_i W + b, y_i) + (λ/2) ‖W‖²` (the bias is not penalised), with the softmax cross-entropy
//! (Multiclass, targets summing to 1), the per-class binary cross-entropy (Multilabel), or half the squared error
//! (ridge regression, for box refinement). It is smooth and strictly
//! convex for λ > 0, so the minimum is unique and the result depends only on the data and λ: training is
//! deterministic, and a path of λ values can be warm-started from the previous solution.

/// Softmax over the classes, an independent sigmoid per class, or least squares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Softmax cross-entropy.
    Softmax,
    /// Per-class binary cross-entropy.
    Sigmoid,
    /// Half the squared error per output (ridge regression); targets are any real numbers.
    Squared,
}

/// Rows per block of the parallel objective evaluation.
const EVAL_BLOCK: usize = 256;

/// A problem: rows of features (row-major `n × d`) and targets (`n × c`).
pub struct Problem<'a> {
    /// Features, row-major.
    pub x: &'a [f32],
    /// Targets, row-major, each in [0, 1] (any real for [`Loss::Squared`]).
    pub y: &'a [f32],
    /// Feature count.
    pub d: usize,
    /// Class count.
    pub c: usize,
    /// Loss.
    pub loss: Loss,
}

/// A solution: weights `c × d` (row per class) and biases.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Row per class.
    pub weight: Vec<f32>,
    /// One per class.
    pub bias: Vec<f32>,
}

/// Dot product with eight independent accumulators, so that the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl Problem<'_> {
    fn rows(&self) -> usize {
        self.x.len() / self.d.max(1)
    }

    /// Scores (logits) of one feature row under the model.
    pub fn logits(model: &Model, row: &[f32]) -> Vec<f32> {
        let d = row.len();
        model.bias.iter().enumerate().map(|(k, b)| b + dot(&model.weight[k * d..(k + 1) * d], row)).collect()
    }

    /// Unscaled loss and gradient sums (weights, biases) of a range of rows.
    fn evaluate_rows(&self, theta: &[f64], w32: &[f32], rows: std::ops::Range<usize>) -> (f64, Vec<f32>, Vec<f64>) {
        let (d, c) = (self.d, self.c);
        let mut gw = vec![0f32; c * d];
        let mut gb = vec![0f64; c];
        let mut total = 0f64;
        let mut resid = vec![0f32; c];
        for i in rows {
            let row = &self.x[i * d..(i + 1) * d];
            let target = &self.y[i * c..(i + 1) * c];
            let z: Vec<f64> = (0..c).map(|k| theta[c * d + k] + dot(&w32[k * d..(k + 1) * d], row) as f64).collect();
            match self.loss {
                Loss::Softmax => {
                    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
                    let log_sum = max + sum.ln();
                    for k in 0..c {
                        let p = (z[k] - log_sum).exp();
                        total -= target[k] as f64 * (z[k] - log_sum);
                        resid[k] = (p - target[k] as f64) as f32;
                    }
                }
                Loss::Sigmoid => {
                    for k in 0..c {
                        let (zk, yk) = (z[k], target[k] as f64);
                        // max(z, 0) − z·y + log(1 + e^−|z|)
                        total += zk.max(0.0) - zk * yk + (-zk.abs()).exp().ln_1p();
                        resid[k] = (1.0 / (1.0 + (-zk).exp()) - yk) as f32;
                    }
                }
                Loss::Squared => {
                    for k in 0..c {
                        let r = z[k] - target[k] as f64;
                        total += 0.5 * r * r;
                        resid[k] = r as f32;
                    }
                }
            }
            for k in 0..c {
                let r = resid[k];
                gb[k] += r as f64;
                for (g, x) in gw[k * d..(k + 1) * d].iter_mut().zip(row) {
                    *g += r * x;
                }
            }
        }
        (total, gw, gb)
    }

    /// Objective and gradient at `theta` (`c × d` weights, then `c` biases).
    fn evaluate(&self, theta: &[f64], lambda: f64) -> (f64, Vec<f64>) {
        use rayon::prelude::*;
        let (n, d, c) = (self.rows(), self.d, self.c);
        let w32: Vec<f32> = theta[..c * d].iter().map(|v| *v as f32).collect();
        // Fixed row blocks, summed in block order: the result does not depend on the thread count.
        let blocks: Vec<(f64, Vec<f32>, Vec<f64>)> = (0..n.div_ceil(EVAL_BLOCK))
            .into_par_iter()
            .map(|b| self.evaluate_rows(theta, &w32, b * EVAL_BLOCK..((b + 1) * EVAL_BLOCK).min(n)))
            .collect();
        let mut total = 0f64;
        let mut gw = vec![0f32; c * d];
        let mut gb = vec![0f64; c];
        for (t, w, b) in blocks {
            total += t;
            gw.iter_mut().zip(&w).for_each(|(g, v)| *g += v);
            gb.iter_mut().zip(&b).for_each(|(g, v)| *g += v);
        }
        let inv = 1.0 / n.max(1) as f64;
        let penalty: f64 = theta[..c * d].iter().map(|v| v * v).sum::<f64>() * lambda / 2.0;
        let mut grad: Vec<f64> = gw.iter().zip(&theta[..c * d]).map(|(g, t)| *g as f64 * inv + lambda * t).collect();
        grad.extend(gb.iter().map(|g| g * inv));
        (total * inv + penalty, grad)
    }

    /// Minimises the objective for `lambda`, starting from `start` (or zero), with L-BFGS (memory 10) and a
    /// backtracking Armijo line search; stops when the gradient's largest component is below `1e-5`, the
    /// objective stops moving, or after `max_iterations`.
    pub fn solve(&self, lambda: f64, start: Option<&Model>, max_iterations: usize) -> Model {
        let (d, c) = (self.d, self.c);
        let mut theta = vec![0f64; c * d + c];
        if let Some(m) = start {
            for (t, w) in theta.iter_mut().zip(m.weight.iter().chain(&m.bias)) {
                *t = *w as f64;
            }
        }
        let (mut f, mut g) = self.evaluate(&theta, lambda);
        let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
        const MEMORY: usize = 10;
        for iteration in 0..max_iterations {
            if g.iter().fold(0f64, |m, v| m.max(v.abs())) < 1e-5 {
                break;
            }
            // Two-loop recursion: direction = −H g.
            let mut q = g.clone();
            let mut alphas = Vec::with_capacity(history.len());
            for (s, y, rho) in history.iter().rev() {
                let a = rho * s.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
                for (qi, yi) in q.iter_mut().zip(y) {
                    *qi -= a * yi;
                }
                alphas.push(a);
            }
            let gamma = match history.last() {
                Some((s, y, _)) => {
                    s.iter().zip(y).map(|(a, b)| a * b).sum::<f64>() / y.iter().map(|v| v * v).sum::<f64>()
                }
                None => 1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12),
            };
            for v in q.iter_mut() {
                *v *= gamma;
            }
            for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
                let b = rho * y.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
                for (qi, si) in q.iter_mut().zip(s) {
                    *qi += (a - b) * si;
                }
            }
            let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
            let mut slope: f64 = dir.iter().zip(&g).map(|(a, b)| a * b).sum();
            if slope >= 0.0 {
                // Not a descent direction (curvature information went stale): fall back to the gradient.
                history.clear();
                dir = g.iter().map(|v| -v).collect();
                slope = -g.iter().map(|v| v * v).sum::<f64>();
            }
            let mut step = 1.0;
            let (mut next, mut f_next, mut g_next);
            loop {
                next = theta.iter().zip(&dir).map(|(t, d)| t + step * d).collect::<Vec<f64>>();
                (f_next, g_next) = self.evaluate(&next, lambda);
                if f_next <= f + 1e-4 * step * slope || step < 1e-10 {
                    break;
                }
                step *= 0.5;
            }
            let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
            let y: Vec<f64> = g_next.iter().zip(&g).map(|(a, b)| a - b).collect();
            let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
            if sy > 1e-12 {
                history.push((s, y, 1.0 / sy));
                if history.len() > MEMORY {
                    history.remove(0);
                }
            }
            let moved = (f - f_next).abs() <= 1e-9 * f.abs().max(1.0);
            theta = next;
            f = f_next;
            g = g_next;
            if moved && iteration > 0 {
                break;
            }
        }
        Model {
            weight: theta[..c * d].iter().map(|v| *v as f32).collect(),
            bias: theta[c * d..].iter().map(|v| *v as f32).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_data() -> (Vec<f32>, Vec<f32>) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..60 {
            let class = i % 3;
            for j in 0..5 {
                let signal = if j == class { 1.5 } else { 0.0 };
                x.push(signal + ((i * 7 + j * 13) as f32 * 0.71).sin());
            }
            for k in 0..3 {
                y.push(if k == class { 1.0 } else { 0.0 });
            }
        }
        (x, y)
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let (x, y) = problem_data();
        for loss in [Loss::Softmax, Loss::Sigmoid, Loss::Squared] {
            let p = Problem { x: &x, y: &y, d: 5, c: 3, loss };
            let theta: Vec<f64> = (0..18).map(|i| (i as f64 * 0.37).cos() * 0.3).collect();
            let (_, g) = p.evaluate(&theta, 0.1);
            for k in [0, 4, 7, 13, 15, 17] {
                let h = 1e-4;
                let (mut up, mut down) = (theta.clone(), theta.clone());
                up[k] += h;
                down[k] -= h;
                let numeric = (p.evaluate(&up, 0.1).0 - p.evaluate(&down, 0.1).0) / (2.0 * h);
                assert!((numeric - g[k]).abs() < 1e-3, "{loss:?} θ{k}: {numeric} vs {}", g[k]);
            }
        }
    }

    #[test]
    fn the_solution_is_a_stationary_point_and_regularisation_shrinks_it() {
        let (x, y) = problem_data();
        let p = Problem { x: &x, y: &y, d: 5, c: 3, loss: Loss::Softmax };
        let weak = p.solve(0.01, None, 500);
        let mut theta: Vec<f64> = weak.weight.iter().chain(&weak.bias).map(|v| *v as f64).collect();
        let (_, g) = p.evaluate(&theta, 0.01);
        assert!(g.iter().all(|v| v.abs() < 1e-3), "{g:?}");
        let strong = p.solve(10.0, Some(&weak), 500);
        let norm = |m: &Model| m.weight.iter().map(|v| v * v).sum::<f32>();
        assert!(norm(&strong) < norm(&weak) * 0.1);
        // Warm and cold starts reach the same minimum.
        let cold = p.solve(10.0, None, 500);
        for (a, b) in cold.weight.iter().zip(&strong.weight) {
            assert!((a - b).abs() < 1e-3);
        }
        theta.iter_mut().for_each(|v| *v = 0.0);
        assert!(
            p.evaluate(&theta, 0.01).0
                > p.evaluate(&weak.weight.iter().chain(&weak.bias).map(|v| *v as f64).collect::<Vec<_>>(), 0.01).0
        );
        // It classifies its training rows.
        let right = (0..60)
            .filter(|i| {
                let z = Problem::logits(&weak, &x[i * 5..i * 5 + 5]);
                let best = (0..3).max_by(|a, b| z[*a].total_cmp(&z[*b])).unwrap_or(0);
                best == i % 3
            })
            .count();
        assert!(right >= 55, "{right}/60");
    }
}
