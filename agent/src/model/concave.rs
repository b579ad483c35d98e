//! The weighted least-squares fit of a concave, non-decreasing function
//! through the origin to measured points: what d(w) is taken to be. The
//! working set of a steady workload grows ever more slowly with the window
//! (Denning and Schwartz, 1972), so its measured points differ from such a
//! curve by sampling noise only; the fit weighs each point by its
//! precision, where the upper concave hull of the points would follow the
//! highest noise.
//!
//! With slopes s_1 >= s_2 >= ... >= s_n >= 0 between consecutive windows,
//! s_j = t_j + ... + t_n with every t_m >= 0, and the fitted value at x_k
//! is f_k = sum over m of t_m x_min(k,m): a non-negative least-squares
//! problem in t (Lawson and Hanson's active-set method, exact for these
//! few points).

/// Fitted values at `x` (ascending, positive) of the concave,
/// non-decreasing curve through the origin closest to `y` in squares
/// weighted by 1 / `sigma`^2.
pub fn concave_fit(x: &[f64], y: &[f64], sigma: &[f64]) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    // Exact points (sigma of a byte) weigh a million times the largest
    // value at most, so the normal equations stay solvable.
    let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let sigma: Vec<f64> = sigma.iter().map(|s| s.max(scale * 1e-6)).collect();
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|k| (0..n).map(|m| x[k.min(m)] / sigma[k]).collect())
        .collect();
    let b: Vec<f64> = (0..n).map(|k| y[k] / sigma[k]).collect();
    let t = nnls(&rows, &b);
    (0..n)
        .map(|k| (0..n).map(|m| t[m] * x[k.min(m)]).sum::<f64>())
        .collect()
}

/// argmin |A t - b| over t >= 0 (Lawson and Hanson 1974, ch. 23).
fn nnls(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = a.first().map_or(0, Vec::len);
    let mut t = vec![0.0; n];
    let mut passive = vec![false; n];
    let tol = 1e-10;
    for _ in 0..3 * n + 3 {
        let residual: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(row, bi)| bi - row.iter().zip(&t).map(|(r, x)| r * x).sum::<f64>())
            .collect();
        let gradient = |j: usize| -> f64 { a.iter().zip(&residual).map(|(r, e)| r[j] * e).sum() };
        let Some(j) = (0..n)
            .filter(|&j| !passive[j])
            .map(|j| (j, gradient(j)))
            .filter(|&(_, g)| g > tol)
            .max_by(|p, q| p.1.total_cmp(&q.1))
            .map(|(j, _)| j)
        else {
            break;
        };
        passive[j] = true;
        loop {
            let z = least_squares(a, b, &passive);
            if (0..n).all(|i| !passive[i] || z[i] > tol) {
                t = z;
                break;
            }
            let alpha = (0..n)
                .filter(|&i| passive[i] && z[i] <= tol)
                .map(|i| t[i] / (t[i] - z[i]))
                .fold(f64::INFINITY, f64::min);
            for i in 0..n {
                t[i] += alpha * (z[i] - t[i]);
                if passive[i] && t[i] <= tol {
                    passive[i] = false;
                    t[i] = 0.0;
                }
            }
            if !passive.iter().any(|&p| p) {
                break;
            }
        }
    }
    t
}

/// Least squares over the columns in `set` (the others zero), by the
/// normal equations and Gaussian elimination with partial pivoting.
fn least_squares(a: &[Vec<f64>], b: &[f64], set: &[bool]) -> Vec<f64> {
    let cols: Vec<usize> = (0..set.len()).filter(|&j| set[j]).collect();
    let p = cols.len();
    let mut m: Vec<Vec<f64>> = (0..p)
        .map(|r| {
            let mut row: Vec<f64> = (0..p)
                .map(|c| a.iter().map(|x| x[cols[r]] * x[cols[c]]).sum())
                .collect();
            row.push(a.iter().zip(b).map(|(x, bi)| x[cols[r]] * bi).sum());
            row
        })
        .collect();
    for c in 0..p {
        let pivot = (c..p)
            .max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs()))
            .unwrap_or(c);
        m.swap(c, pivot);
        if m[c][c].abs() < 1e-300 {
            continue;
        }
        let pivot_row = m[c].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot_row[c];
                for (v, p) in row.iter_mut().zip(&pivot_row).skip(c) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut z = vec![0.0; set.len()];
    for (r, &j) in cols.iter().enumerate() {
        if m[r][r].abs() >= 1e-300 {
            z[j] = m[r][p] / m[r][r];
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs()))
    }

    #[test]
    fn a_concave_curve_is_its_own_fit() {
        let x = [0.1, 0.25, 0.5, 1.0, 2.0, 4.0];
        // A hot set of 100 swept at 60 per second: saturates at 1.67.
        let y: Vec<f64> = x.iter().map(|w: &f64| (60.0 * w).min(100.0)).collect();
        let fit = concave_fit(&x, &y, &[1.0; 6]);
        assert!(close(&fit, &y), "{fit:?}");
    }

    #[test]
    fn noise_above_the_curve_is_averaged_not_followed() {
        // A straight line at 50 per second with one point 20% high: the
        // upper hull would bend the line up to it; the fit keeps the line
        // close and the result concave.
        let x = [0.5, 1.0, 2.0, 4.0];
        let y = [25.0, 50.0, 120.0, 200.0];
        let fit = concave_fit(&x, &y, &[5.0; 4]);
        let slopes: Vec<f64> = (0..4)
            .map(|k| {
                let (x0, f0) = if k == 0 {
                    (0.0, 0.0)
                } else {
                    (x[k - 1], fit[k - 1])
                };
                (fit[k] - f0) / (x[k] - x0)
            })
            .collect();
        assert!(slopes.windows(2).all(|s| s[0] >= s[1] - 1e-9), "{slopes:?}");
        assert!(fit[2] < 117.0 && fit[2] > 95.0, "{fit:?}");
        assert!(fit[3] < 205.0 && fit[3] > 190.0, "{fit:?}");
    }

    #[test]
    fn precise_points_weigh_more() {
        // Two points that cannot both lie on a concave curve through the
        // origin: the precise one stays, the rough one moves.
        let x = [1.0, 2.0];
        let y = [10.0, 40.0];
        let fit = concave_fit(&x, &y, &[0.1, 10.0]);
        assert!((fit[0] - 10.0).abs() < 0.5, "{fit:?}");
        assert!((fit[1] - 20.0).abs() < 1.0, "{fit:?}");
        let fit = concave_fit(&x, &y, &[10.0, 0.1]);
        assert!(
            (fit[1] - 40.0).abs() < 0.5 && (fit[0] - 20.0).abs() < 1.0,
            "{fit:?}"
        );
    }

    #[test]
    fn falling_points_give_a_flat_curve() {
        let fit = concave_fit(&[1.0, 2.0, 4.0], &[30.0, 20.0, 25.0], &[1.0; 3]);
        assert!(fit.windows(2).all(|f| f[1] >= f[0] - 1e-9), "{fit:?}");
        assert!(close(&fit, &[25.0, 25.0, 25.0]), "{fit:?}");
    }
}
