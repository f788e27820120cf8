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
    while out.len() % ALIGNMENT != 0 {
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
