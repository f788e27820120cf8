//! Shadow scorer throughput on the CPU: answer pairs scored per second by the embedding gate
//! (all-MiniLM-L6-v2 through candle) and the fact gate, the two gates that run locally.
//! `cargo run --release --example scorer_bench -- [PAIRS]`

use std::sync::Arc;
use std::time::Instant;

use condenser::equivalence::{Answer, Embedder, GateParts, Scorer, Thresholds};

fn answer(text: String) -> Answer {
    Answer {
        text,
        ..Answer::default()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let pairs: usize = std::env::args().nth(1).map_or(Ok(200), |n| n.parse())?;
    let embedder = Arc::new(Embedder::load(std::path::Path::new(
        "models/all-MiniLM-L6-v2",
    ))?);
    let parts = GateParts {
        embedder: Some(embedder),
        judge: None,
    };
    let scorer = Scorer::new(&parts, Thresholds::default());
    // Typical chat answers: two to four sentences with numbers and names.
    let reference = |i: usize| {
        format!(
            "Invoice {i} was paid on 3 June 2024 by Acme Corp. The total was ${}.{:02}, \
             including a {}% discount agreed with Maria Rossi. Shipping went out from Rotterdam.",
            100 + i,
            i % 100,
            i % 20
        )
    };
    let started = Instant::now();
    let mut passed = 0;
    for i in 0..pairs {
        let a = answer(reference(i));
        let b = answer(reference(i).replace("Rotterdam", "the Rotterdam warehouse"));
        let scores = scorer.score("When was the invoice paid?", &a, &b).await;
        passed += usize::from(condenser::equivalence::passed(&scores, &scorer.thresholds));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{pairs} pairs in {secs:.2} s: {:.1} pairs/s ({:.1} ms per pair), {passed} passed",
        pairs as f64 / secs,
        secs * 1000.0 / pairs as f64
    );
    Ok(())
}
