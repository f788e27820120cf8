//! Auto-rollout: a route serves compressed requests only while compression's rolling pass rate,
//! net of the noise floor, holds the bar; below it the route serves originals again. The noise
//! floor is the pass rate of original-vs-original pairs: when a model disagrees with itself 10%
//! of the time, a 90% compression pass rate is as good as it can get, so the net rate divides by
//! it.

use crate::config::Leg;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub serve: Leg,
    /// Compression pass rate over the window, divided by the noise floor's pass rate when there
    /// are noise samples; `None` until the window holds `min_samples`.
    pub net_pass_rate: Option<f64>,
    pub samples: usize,
}

fn rate(verdicts: &[bool]) -> Option<f64> {
    (!verdicts.is_empty())
        .then(|| verdicts.iter().filter(|v| **v).count() as f64 / verdicts.len() as f64)
}

/// `compression` and `noise` are the latest verdicts, newest first, at most `min_samples` of the
/// compression ones.
pub fn decide(
    current: Leg,
    compression: &[bool],
    noise: &[bool],
    min_samples: usize,
    min_pass_rate: f64,
) -> Decision {
    let samples = compression.len();
    if samples < min_samples {
        return Decision {
            serve: current,
            net_pass_rate: None,
            samples,
        };
    }
    let window = &compression[..min_samples];
    let raw = rate(window).unwrap_or(0.0);
    let net = match rate(noise) {
        Some(floor) if floor > 0.0 => (raw / floor).min(1.0),
        _ => raw,
    };
    Decision {
        serve: if net >= min_pass_rate {
            Leg::Compressed
        } else {
            Leg::Original
        },
        net_pass_rate: Some(net),
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_enough_samples() {
        let d = decide(Leg::Original, &[true; 9], &[], 10, 0.9);
        assert_eq!(d.serve, Leg::Original);
        assert_eq!(d.net_pass_rate, None);
    }

    #[test]
    fn flips_both_ways() {
        let on = decide(Leg::Original, &[true; 10], &[], 10, 0.9);
        assert_eq!(on.serve, Leg::Compressed);
        let mut failing = vec![false; 3];
        failing.extend([true; 7]);
        let off = decide(Leg::Compressed, &failing, &[], 10, 0.9);
        assert_eq!(off.serve, Leg::Original);
    }

    #[test]
    fn the_noise_floor_is_not_blamed_on_compression() {
        // 8/10 compression passes, but originals agree with each other only 8/10 times too.
        let mut compression = vec![true; 8];
        compression.extend([false; 2]);
        let noise = compression.clone();
        assert_eq!(
            decide(Leg::Original, &compression, &[], 10, 0.9).serve,
            Leg::Original
        );
        let net = decide(Leg::Original, &compression, &noise, 10, 0.9);
        assert_eq!(net.serve, Leg::Compressed);
        assert_eq!(net.net_pass_rate, Some(1.0));
    }
}
