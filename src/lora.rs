//! LoRA adapters in the GGUF layout llama.cpp loads at runtime (`general.type = adapter`,
//! `adapter.type = lora`, `adapter.lora.alpha`, and per adapted weight `<name>.lora_a` with
//! ne = [in, rank] and `<name>.lora_b` with ne = [rank, out], f32). `condenser-train` writes its
//! adapters with this; the tests write tiny random ones to prove adapters change the output.

use std::io::Write;
use std::path::Path;

/// One adapted weight: its name in the base model (e.g. `blk.0.attn_q.weight`), its input and
/// output sizes, and the two low-rank factors, row-major with `ne0` fastest.
pub struct LoraPair {
    pub weight: String,
    pub n_in: usize,
    pub n_out: usize,
    pub rank: usize,
    /// `rank` rows of `n_in` values.
    pub a: Vec<f32>,
    /// `n_out` rows of `rank` values.
    pub b: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("adapter tensor {0} has the wrong number of values")]
    Shape(String),
    #[error("writing the adapter: {0}")]
    Io(#[from] std::io::Error),
    #[error("{file}: {reason}")]
    Mismatch { file: String, reason: String },
}

/// Checks, from the two files' headers alone, that `adapter` is a GGUF LoRA adapter made for
/// `base`: same architecture, every `<w>.lora_a` / `<w>.lora_b` pair naming a weight of the base
/// with `a` = `[rank, in]` and `b` = `[out, rank]` of its shape. `condenser check` and start-up
/// run it so a wrong adapter is refused with its file named, before llama.cpp sees it.
pub fn check_lora(base: &Path, adapter: &Path) -> Result<usize, AdapterError> {
    use candle_core::quantized::gguf_file::Content;
    let mismatch = |reason: String| AdapterError::Mismatch {
        file: adapter.display().to_string(),
        reason,
    };
    let read = |path: &Path| -> Result<Content, AdapterError> {
        let mut file = std::fs::File::open(path).map_err(|e| AdapterError::Mismatch {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Content::read(&mut file).map_err(|e| AdapterError::Mismatch {
            file: path.display().to_string(),
            reason: format!("not a GGUF file ({e})"),
        })
    };
    let (base_gguf, lora) = (read(base)?, read(adapter)?);
    let text = |c: &Content, key: &str| {
        c.metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default()
    };
    if text(&lora, "general.type") != "adapter" || text(&lora, "adapter.type") != "lora" {
        return Err(mismatch(
            "not a GGUF LoRA adapter (general.type / adapter.type)".into(),
        ));
    }
    let (arch, base_arch) = (
        text(&lora, "general.architecture"),
        text(&base_gguf, "general.architecture"),
    );
    if arch != base_arch {
        return Err(mismatch(format!(
            "made for architecture `{arch}`, the base model is `{base_arch}`"
        )));
    }
    let mut pairs = 0;
    for (name, a) in &lora.tensor_infos {
        let Some(weight) = name.strip_suffix(".lora_a") else {
            continue;
        };
        let b = lora
            .tensor_infos
            .get(&format!("{weight}.lora_b"))
            .ok_or_else(|| mismatch(format!("{name} has no {weight}.lora_b")))?;
        let w = base_gguf
            .tensor_infos
            .get(weight)
            .ok_or_else(|| mismatch(format!("the base model has no tensor {weight}")))?;
        let (a, b, w) = (a.shape.dims(), b.shape.dims(), w.shape.dims());
        let fits = matches!((a, b, w), ([rank, n_in], [n_out, rank_b], [out, inp])
            if rank == rank_b && n_in == inp && n_out == out);
        if !fits {
            return Err(mismatch(format!(
                "{weight} is {w:?} in the base model; the adapter's factors are {a:?} and {b:?}"
            )));
        }
        pairs += 1;
    }
    if pairs == 0 {
        return Err(mismatch("adapts no tensor".into()));
    }
    Ok(pairs)
}

const ALIGNMENT: usize = 32;
const GGUF_VERSION: u32 = 3;
const TYPE_F32_VALUE: u32 = 6;
const TYPE_STRING_VALUE: u32 = 8;
const TENSOR_F32: u32 = 0;

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn kv_string(out: &mut Vec<u8>, key: &str, value: &str) {
    string(out, key);
    out.extend(TYPE_STRING_VALUE.to_le_bytes());
    string(out, value);
}

fn kv_f32(out: &mut Vec<u8>, key: &str, value: f32) {
    string(out, key);
    out.extend(TYPE_F32_VALUE.to_le_bytes());
    out.extend(value.to_le_bytes());
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(ALIGNMENT) {
        out.push(0);
    }
}

/// Writes a GGUF LoRA adapter for a base model of architecture `arch` (e.g. `llama`).
pub fn write_lora(
    path: &Path,
    arch: &str,
    alpha: f32,
    pairs: &[LoraPair],
) -> Result<(), AdapterError> {
    let mut tensors: Vec<(String, [usize; 2], &[f32])> = Vec::with_capacity(pairs.len() * 2);
    for p in pairs {
        if p.a.len() != p.n_in * p.rank {
            return Err(AdapterError::Shape(format!("{}.lora_a", p.weight)));
        }
        if p.b.len() != p.rank * p.n_out {
            return Err(AdapterError::Shape(format!("{}.lora_b", p.weight)));
        }
        tensors.push((format!("{}.lora_a", p.weight), [p.n_in, p.rank], &p.a));
        tensors.push((format!("{}.lora_b", p.weight), [p.rank, p.n_out], &p.b));
    }
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(GGUF_VERSION.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(4u64.to_le_bytes());
    kv_string(&mut out, "general.architecture", arch);
    kv_string(&mut out, "general.type", "adapter");
    kv_string(&mut out, "adapter.type", "lora");
    kv_f32(&mut out, "adapter.lora.alpha", alpha);
    let mut offset = 0usize;
    for (name, ne, data) in &tensors {
        string(&mut out, name);
        out.extend(2u32.to_le_bytes());
        for n in ne {
            out.extend((*n as u64).to_le_bytes());
        }
        out.extend(TENSOR_F32.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset += (data.len() * 4).div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    pad(&mut out);
    for (_, _, data) in &tensors {
        for v in data.iter() {
            out.extend(v.to_le_bytes());
        }
        pad(&mut out);
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(&out)?;
    file.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adapter_is_checked_against_its_base_model_by_shape() {
        let dir = tempfile::tempdir().expect("tmp");
        let pair = |n_in: usize, n_out: usize| LoraPair {
            weight: "blk.0.attn_q.weight".into(),
            n_in,
            n_out,
            rank: 2,
            a: vec![0.5; 2 * n_in],
            b: vec![0.5; 2 * n_out],
        };
        // A "base model": an adapter file is GGUF too, and its tensors are what is compared.
        let base = dir.path().join("base.gguf");
        let mut as_base = pair(32, 64);
        as_base.weight = "blk.0.attn_q".into();
        write_lora(&base, "llama", 1.0, &[as_base]).expect("base");
        // The base's tensor `blk.0.attn_q.lora_a` has candle dims [2, 32]; an adapter of it
        // names `blk.0.attn_q.lora_a` as its weight.
        let good = dir.path().join("good.gguf");
        let mut fits = pair(32, 2);
        fits.weight = "blk.0.attn_q.lora_a".into();
        write_lora(&good, "llama", 1.0, &[fits]).expect("good");
        assert_eq!(check_lora(&base, &good).expect("fits"), 1);
        let wrong = dir.path().join("wrong-shape.gguf");
        let mut misfit = pair(16, 2);
        misfit.weight = "blk.0.attn_q.lora_a".into();
        write_lora(&wrong, "llama", 1.0, &[misfit]).expect("wrong");
        let error = check_lora(&base, &wrong)
            .expect_err("shape differs")
            .to_string();
        assert!(error.contains("wrong-shape.gguf"), "{error}");
        let other_arch = dir.path().join("qwen.gguf");
        let mut fits = pair(32, 2);
        fits.weight = "blk.0.attn_q.lora_a".into();
        write_lora(&other_arch, "qwen2", 1.0, &[fits]).expect("qwen");
        let error = check_lora(&base, &other_arch)
            .expect_err("arch")
            .to_string();
        assert!(error.contains("qwen2"), "{error}");
        std::fs::write(dir.path().join("junk.gguf"), b"not a gguf").expect("junk");
        let error = check_lora(&base, &dir.path().join("junk.gguf"))
            .expect_err("junk")
            .to_string();
        assert!(error.contains("junk.gguf"), "{error}");
    }

    #[test]
    fn layout_is_gguf_v3_with_aligned_tensor_data() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.gguf");
        let pair = LoraPair {
            weight: "blk.0.attn_q.weight".into(),
            n_in: 3,
            n_out: 2,
            rank: 1,
            a: vec![1.0, 2.0, 3.0],
            b: vec![4.0, 5.0],
        };
        write_lora(&path, "llama", 1.0, &[pair]).expect("writes");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(
            u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            3
        );
        assert_eq!(bytes[8], 2, "two tensors");
        // Data section: a (3 floats, padded to 32 bytes), then b.
        let data = bytes.len() - 64;
        assert_eq!(data % ALIGNMENT, 0);
        assert_eq!(&bytes[data..data + 4], &1.0f32.to_le_bytes());
        assert_eq!(&bytes[data + 32..data + 36], &4.0f32.to_le_bytes());
        let wrong = LoraPair {
            weight: "w".into(),
            n_in: 3,
            n_out: 2,
            rank: 1,
            a: vec![1.0],
            b: vec![],
        };
        assert!(write_lora(&path, "llama", 1.0, &[wrong]).is_err());
    }
}
