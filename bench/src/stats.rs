//! Min / median / max of repeated measurements.

use serde::Serialize;

/// Summary of the samples of one figure at one size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// Every sample, in the order taken.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
        Some(Summary { min: sorted[0], median, max: sorted[sorted.len() - 1], samples: samples.to_vec() })
    }
}

/// The exponent `k` of `y ≈ c·N^k` through the first and last point (log-log slope).
pub fn growth_exponent(points: &[(f64, f64)]) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    if points.len() < 2 || first.0 <= 0.0 || last.0 <= first.0 || first.1 <= 0.0 || last.1 <= 0.0 {
        return None;
    }
    Some((last.1.ln() - first.1.ln()) / (last.0.ln() - first.0.ln()))
}

/// Words for a growth exponent, for people reading the table.
pub fn growth_words(k: f64) -> &'static str {
    match k {
        k if k < -0.15 => "falls",
        k if k < 0.15 => "flat",
        k if k < 0.85 => "sublinear",
        k if k < 1.15 => "linear",
        k if k < 1.6 => "superlinear",
        _ => "quadratic or worse",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn growth_of_linear_and_flat_series() {
        let linear = [(100.0, 1.0), (1000.0, 10.0), (10000.0, 100.0)];
        assert!((growth_exponent(&linear).unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(growth_words(growth_exponent(&[(100.0, 5.0), (10000.0, 5.0)]).unwrap()), "flat");
        assert!(growth_exponent(&[(100.0, 5.0)]).is_none());
    }
}
