//! Answer metrics with SQuAD's normalisation (lower-case, no punctuation, no articles, single
//! spaces), shared by every benchmark: containment (answer recall), exact match and token F1 —
//! with HotPotQA's rule that a yes/no/noanswer on either side scores only on an exact match —
//! and Qasper's convention that an unanswerable question's gold answer is "unanswerable".

/// SQuAD `normalize_answer`.
pub fn normalize(text: &str) -> String {
    let lowered = text.to_lowercase();
    let no_punct: String = lowered
        .chars()
        .map(|c| if c.is_ascii_punctuation() { ' ' } else { c })
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the gold answer appears in the text after normalisation (word-aligned).
pub fn contains_answer(text: &str, answer: &str) -> bool {
    let answer = normalize(answer);
    if answer.is_empty() {
        return false;
    }
    let haystack = format!(" {} ", normalize(text));
    haystack.contains(&format!(" {answer} "))
}

/// Exact match and token F1 of one prediction against one gold answer.
pub fn em_f1(prediction: &str, gold: &str) -> (f64, f64) {
    let (p, g) = (normalize(prediction), normalize(gold));
    let em = f64::from(u8::from(p == g));
    // HotPotQA's official scorer: special answers only count when they match exactly.
    let special = |s: &str| matches!(s, "yes" | "no" | "noanswer");
    if (special(&p) || special(&g)) && p != g {
        return (0.0, 0.0);
    }
    let p_tokens: Vec<&str> = p.split_whitespace().collect();
    let g_tokens: Vec<&str> = g.split_whitespace().collect();
    let mut remaining = g_tokens.clone();
    let mut common = 0usize;
    for t in &p_tokens {
        if let Some(k) = remaining.iter().position(|g| g == t) {
            remaining.swap_remove(k);
            common += 1;
        }
    }
    if common == 0 {
        return (em, 0.0);
    }
    let precision = common as f64 / p_tokens.len() as f64;
    let recall = common as f64 / g_tokens.len() as f64;
    (em, 2.0 * precision * recall / (precision + recall))
}

/// The best EM and F1 over every acceptable answer (each maximised separately, as SQuAD does).
/// An empty gold list means "unanswerable" (Qasper).
pub fn best_em_f1(prediction: &str, golds: &[String]) -> (f64, f64) {
    if golds.is_empty() {
        return em_f1(prediction, "unanswerable");
    }
    golds.iter().fold((0.0, 0.0), |(em, f1), gold| {
        let (e, f) = em_f1(prediction, gold);
        (em.max(e), f1.max(f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation() {
        assert_eq!(normalize("The  Eiffel Tower!"), "eiffel tower");
        assert_eq!(normalize("An apple, a day."), "apple day");
    }

    #[test]
    fn answer_containment_is_word_aligned() {
        assert!(contains_answer("It opened in 1889, in Paris.", "1889"));
        assert!(contains_answer(
            "Built by the Eiffel company",
            "Eiffel Company"
        ));
        assert!(!contains_answer("It opened in 18890.", "1889"));
        assert!(!contains_answer("anything", ""));
    }

    #[test]
    fn token_f1_matches_squad() {
        let (em, f1) = em_f1("the Eiffel Tower in Paris", "Eiffel Tower");
        assert_eq!(em, 0.0);
        // precision 2/4, recall 2/2
        assert!((f1 - 2.0 * 0.5 * 1.0 / 1.5).abs() < 1e-9);
        assert_eq!(em_f1("Eiffel Tower.", "the eiffel tower"), (1.0, 1.0));
        assert_eq!(em_f1("Paris", "London"), (0.0, 0.0));
    }

    #[test]
    fn repeated_tokens_count_once_per_gold_occurrence() {
        let (_, f1) = em_f1("new new new", "new york");
        // one common token: precision 1/3, recall 1/2
        assert!((f1 - 0.4).abs() < 1e-9);
    }

    #[test]
    fn yes_no_answers_score_only_on_exact_match() {
        assert_eq!(em_f1("yes", "no"), (0.0, 0.0));
        assert_eq!(em_f1("yes it is", "yes"), (0.0, 0.0));
        assert_eq!(em_f1("Yes.", "yes"), (1.0, 1.0));
        assert_eq!(em_f1("no", "Norway is no"), (0.0, 0.0));
    }

    #[test]
    fn best_over_golds_and_unanswerable() {
        let golds = vec!["BERT, RoBERTa".to_string(), "BERT".to_string()];
        assert_eq!(best_em_f1("BERT", &golds), (1.0, 1.0));
        assert_eq!(best_em_f1("Unanswerable", &[]), (1.0, 1.0));
        assert_eq!(best_em_f1("BERT", &[]), (0.0, 0.0));
    }
}
