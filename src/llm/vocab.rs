//! A GGUF model's tokenizer alone (llama.cpp `vocab_only`): what `condenser-train` and the
//! `select` compressor tokenize with, so training and serving see the same token ids.

use std::path::Path;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

use super::generate::prompt_tokens;
use super::local::backend;
use super::{ChatTurn, LlmError};

pub struct Vocabulary {
    model: LlamaModel,
}

impl Vocabulary {
    pub fn load(path: &Path) -> Result<Self, LlmError> {
        let backend = backend()?;
        if !path.is_file() {
            return Err(LlmError::Load(format!("{} does not exist", path.display())));
        }
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| LlmError::Load(format!("{}: {e}", path.display())))?;
        Ok(Self { model })
    }

    /// Token ids of `text`; `add_special` adds the model's BOS where its vocabulary asks for one.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// The prompt tokens `generate` decodes for `turns`: the model's chat template, special
    /// tokens parsed, the assistant turn opened. A trainer appends the target reply to them.
    pub fn chat_tokens(&self, turns: &[ChatTurn]) -> Result<Vec<i32>, LlmError> {
        Ok(prompt_tokens(&self.model, turns)?
            .into_iter()
            .map(|t| t.0)
            .collect())
    }

    /// The token that ends a reply (end of turn where the vocabulary has one, else end of text):
    /// `generate` stops at it, so a reply trained to end with it ends where it should.
    pub fn end_of_reply(&self) -> i32 {
        let vocab = self.model.vocab();
        let eot = vocab.eot();
        if eot.0 >= 0 {
            eot.0
        } else {
            vocab.eos().0
        }
    }

    pub fn len(&self) -> usize {
        self.model.n_vocab().max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
