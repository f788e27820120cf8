//! The embedding gate on the real all-MiniLM-L6-v2 (fetched by `scripts/fetch-embedder`).

use std::path::Path;

use condenser::equivalence::Embedder;

fn embedder() -> Embedder {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    Embedder::load(&dir).expect("run scripts/fetch-embedder")
}

#[test]
fn paraphrases_score_above_the_gate_and_unrelated_answers_below() {
    let e = embedder();
    let a = "The lighthouse lamp was first lit on 14 March 1896 by Marguerite Okonkwo.";
    let paraphrase = "Marguerite Okonkwo first lit the lighthouse lamp on March 14, 1896.";
    let unrelated = "Preheat the oven to 200 degrees and bake the bread for forty minutes.";
    let same = e.similarity(a, a).expect("embeds");
    let close = e.similarity(a, paraphrase).expect("embeds");
    let far = e.similarity(a, unrelated).expect("embeds");
    assert!((same - 1.0).abs() < 1e-4, "identical texts: {same}");
    assert!(close > 0.80, "paraphrase: {close}");
    assert!(far < 0.30, "unrelated: {far}");
}

#[test]
fn embeddings_are_unit_length_and_long_answers_are_cut_not_failed() {
    let e = embedder();
    let long = "word ".repeat(2000);
    let v = e.embed(&long).expect("a long answer embeds");
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert_eq!(v.len(), 384);
    assert!((norm - 1.0).abs() < 1e-4);
}
