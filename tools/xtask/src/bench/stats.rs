//! The statistics of the benchmarks: medians of interleaved runs, percentiles of
//! latency samples, the least-squares slope of a series over time.

use std::cmp::Ordering;

/// The median of `v` (for an even count, the upper of the two middle values: always a
/// measured value). `v` must not be empty (every benchmark runs at least once).
pub fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    v[v.len() / 2]
}

/// The `p`th percentile of the ascending `sorted` (nearest rank below); `sorted` must
/// not be empty.
pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() - 1) * p.min(100) / 100]
}

/// Least-squares slope of `y` over `x` (0 for fewer than two points or a vertical
/// spread of none).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn median_is_a_measured_middle_value() {
        assert_eq!(median(vec![3u64, 1, 2]), 2);
        assert_eq!(median(vec![4u64, 1, 3, 2]), 3);
        assert_eq!(median(vec![7u64]), 7);
        assert_eq!(median(vec![2.5f64, -1.0, 9.0]), 2.5);
        assert_eq!(
            median(vec![
                Duration::from_millis(9),
                Duration::from_millis(1),
                Duration::from_millis(5)
            ]),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn percentiles_take_the_nearest_rank_below() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), 50.0);
        assert_eq!(percentile(&v, 99), 99.0);
        assert_eq!(percentile(&[1.0, 2.0], 50), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 1000), 2.0);
    }

    #[test]
    fn slope_of_a_line_and_of_noise() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(0.0, 4.0), (1.0, 4.0), (2.0, 4.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 4.0)]), 0.0);
    }
}
