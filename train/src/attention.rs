//! Causal softmax as one autograd op: `softmax(scale · S + causal mask)` over the last dimension
//! of attention scores `[.., T, T]`, with its own backward. Composed from candle ops, the same
//! function keeps six `[heads, T, T]` tensors per block alive for the backward pass (scaled,
//! masked, max-shifted, exponentiated, the sum's broadcast, the quotient); this op keeps its
//! input and output only, which at 1k-token windows is most of the training step's memory.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};

pub struct CausalSoftmax {
    /// Multiplies the scores before the softmax (1/√head_dim).
    pub scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(values) = storage else {
            candle_core::bail!("causal-softmax: f32 scores only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal-softmax: scores must be contiguous");
        };
        let dims = layout.shape().dims();
        let &[.., rows, cols] = dims else {
            candle_core::bail!("causal-softmax: scores {dims:?} are not [.., T, T]");
        };
        if rows != cols {
            candle_core::bail!("causal-softmax: scores {dims:?} are not [.., T, T]");
        }
        let src = &values[start..end];
        let mut out = vec![0f32; src.len()];
        for (row_index, (row, dst)) in src.chunks(cols).zip(out.chunks_mut(cols)).enumerate() {
            // Query i sees keys 0..=i.
            let visible = row_index % rows + 1;
            let max = row[..visible]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v * self.scale));
            let mut sum = 0f32;
            for (d, &v) in dst[..visible].iter_mut().zip(&row[..visible]) {
                *d = (v * self.scale - max).exp();
                sum += *d;
            }
            for d in &mut dst[..visible] {
                *d /= sum;
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    /// dS = scale · P ⊙ (dP − Σ_j dP ⊙ P): masked positions have P = 0, so they get no gradient.
    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dot = (grad * res)?.sum_keepdim(D::Minus1)?;
        let shifted = grad.broadcast_sub(&dot)?;
        Ok(Some(((shifted * res)? * self.scale as f64)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The composed definition the op replaces.
    fn composed(scores: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
        let t = scores.dim(D::Minus1)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
        candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(&mask)?, D::Minus1)
    }

    #[test]
    fn forward_and_gradient_equal_the_composed_softmax() -> candle_core::Result<()> {
        let scale = 0.125;
        let scores = Var::from_tensor(&Tensor::randn(0f32, 3.0, (2, 3, 5, 5), &Device::Cpu)?)?;
        let weights = Tensor::randn(0f32, 1.0, (2, 3, 5, 5), &Device::Cpu)?;
        let fused = scores.as_tensor().apply_op1(CausalSoftmax { scale })?;
        let reference = composed(scores.as_tensor(), scale as f64)?;
        let gap = (&fused - &reference)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(gap < 1e-6, "forward differs by {gap}");

        let grad = |probs: &Tensor| -> candle_core::Result<Tensor> {
            let loss = (probs * &weights)?.sum_all()?;
            Ok(loss
                .backward()?
                .get(scores.as_tensor())
                .expect("grad")
                .clone())
        };
        let (g_fused, g_reference) = (grad(&fused)?, grad(&reference)?);
        let gap = (&g_fused - &g_reference)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(gap < 1e-5, "gradient differs by {gap}");
        // Keys after the query get nothing: the upper triangle's gradient is zero.
        let upper: Vec<Vec<f32>> = g_fused.get(0)?.get(0)?.to_vec2()?;
        assert!(upper
            .iter()
            .enumerate()
            .all(|(i, row)| row[i + 1..].iter().all(|&g| g == 0.0)));
        Ok(())
    }
}
