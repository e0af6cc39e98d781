//! The intent classifier, trained at load time from each intent's examples and keywords.
//!
//! Text is normalised for the way Pakistani customers write (Roman Urdu spelling variants,
//! Urdu script, Urdu digits, emoji, stretched letters, invisible direction marks), read
//! through the lexicon (synonyms, English stems) and turned into features weighted by TF-IDF:
//! words, word pairs, character 3- to 5-grams (which carry spelling variants no word list
//! can: "kahan/kahaan/kaha", "nahi/nai/nhi") and the words a negation reaches ("not
//! received", "order nahi kiya"). Two readers share them: a multinomial logistic regression
//! trained at load ([`linear`]) and nearest neighbours (every example and each intent's
//! centroid). Their probabilities are mixed; the best intent's is the confidence, so
//! `settings.intent_threshold` means "how sure must the bot be". The pack's `unrelated`
//! messages are one more class, "none of these". Everything is deterministic: features are
//! numbered in the order the pack defines them, training visits examples in a fixed-seed
//! order, and no hash map is ever iterated.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

mod linear;

/// The intent reported when no intent reaches the threshold.
pub const UNKNOWN: &str = "unknown";

/// Normalises a customer message for classification.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last: Option<char> = None;
    for c in text.nfkc() {
        let c = fold_char(c);
        let Some(c) = c else { continue };
        // An emoji is a word of its own ("👋", "📦❓" say something); other symbols are space.
        if is_emoji(c) {
            if last != Some(c) {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
                out.push(c);
                out.push(' ');
            }
            last = Some(c);
            continue;
        }
        let c = if c.is_alphanumeric() { c } else { ' ' };
        if c == ' ' && last.is_some_and(is_emoji) {
            last = Some(' ');
            continue;
        }
        for lc in c.to_lowercase() {
            // Stretched letters ("plzzz", "kahaan", "nahiii") fold to one; digits too, so a
            // number becomes one short token.
            if Some(lc) == last && lc != ' ' {
                continue;
            }
            if lc.is_ascii_digit() && last.is_some_and(|l| l.is_ascii_digit()) {
                continue;
            }
            let lc = if lc.is_ascii_digit() { '0' } else { lc };
            if lc == ' ' && (last == Some(' ') || last.is_none()) {
                last = Some(' ');
                continue;
            }
            out.push(lc);
            last = Some(lc);
        }
    }
    let trimmed = out.trim_end();
    let mut words: Vec<&str> = Vec::new();
    for w in trimmed.split(' ') {
        words.push(fold_word(w));
    }
    words.join(" ")
}

/// Pictographs and the symbols customers send as words (👋, 📦, ❓, 😡, 👍).
fn is_emoji(c: char) -> bool {
    matches!(c, '\u{1F300}'..='\u{1FAFF}' | '\u{2600}'..='\u{27BF}' | '\u{2B50}' | '\u{2B55}')
}

/// Maps Urdu/Arabic letter and digit variants to one form; drops diacritics and tatweel.
fn fold_char(c: char) -> Option<char> {
    if let Some(d) = crate::entities::ascii_digit(c) {
        return Some(d);
    }
    Some(match c {
        '\u{064A}' | '\u{0649}' => '\u{06CC}', // Arabic yeh, alef maksura → Farsi yeh
        '\u{0643}' => '\u{06A9}',              // Arabic kaf → keheh
        // heh, teh marbuta, heh goal with hamza, and do-chashmi heh (customers use them
        // interchangeably: "بھیج" / "بہیج") → heh goal
        '\u{0647}' | '\u{06C3}' | '\u{0629}' | '\u{06C2}' | '\u{06BE}' => '\u{06C1}',
        '\u{0626}' => '\u{06CC}', // yeh with hamza → yeh (the hamza is a mark, dropped below)
        '\u{0623}' | '\u{0625}' | '\u{0622}' => '\u{0627}', // alef with hamza/madda → alef
        '\u{06D3}' => '\u{06D2}',
        '\u{064B}'..='\u{065F}' | '\u{0670}' | '\u{06D6}'..='\u{06ED}' | '\u{0640}' => return None,
        // Zero-width joiners, the variation selector, and the invisible direction marks
        // phones insert around Urdu text.
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{061C}'
        | '\u{FEFF}'
        | '\u{FE0F}' => return None,
        // Skin tones: "👍🏽" is "👍".
        '\u{1F3FB}'..='\u{1F3FF}' => return None,
        _ => c,
    })
}

/// Common chat spellings folded to one form (after stretched letters were folded).
fn fold_word(w: &str) -> &str {
    match w {
        "hy" | "he" | "hay" | "hae" | "hain" | "hen" => "hai",
        "ni" | "nai" | "nahin" | "nhi" | "nae" | "nhe" | "nahe" | "nahein" => "nahi",
        "mujhy" | "mujhay" | "muje" | "mje" | "mjhe" => "mujhe",
        "kr" | "kar" | "ker" => "kar",
        "krna" | "karna" | "kerna" => "karna",
        "krdo" | "kardo" | "kr do" => "kardo",
        "plz" | "pls" | "plis" | "plx" | "pleas" => "please",
        "u" => "you",
        "ur" => "your",
        "r" => "are",
        "y" => "why",
        "k" | "ok" | "okay" | "oky" | "okey" => "ok",
        "thx" | "thnx" | "thanks" | "thank" => "thanks",
        "kaha" | "kahn" | "kidhar" | "kider" => "kahan",
        "kb" => "kab",
        "kia" | "kya" => "kya",
        "ap" => "aap",
        "mera" | "mra" | "meraa" => "mera",
        "hoga" | "hogaa" | "hogi" => "hoga",
        "abi" | "abhe" => "abhi",
        "tak" | "tk" => "tak",
        "bhai" | "bhae" | "bro" => "bhai",
        "salam" | "slam" | "salaam" | "aoa" => "salam",
        "parsal" | "pacel" | "percel" => "parcel",
        "ordr" | "oder" => "order",
        "adres" | "adress" | "addres" => "adres",
        other => other,
    }
}

/// A sparse vector: feature ids ascending, with weights; L2-normalised.
#[derive(Debug, Clone, Default)]
struct SparseVec {
    ids: Vec<u32>,
    w: Vec<f32>,
}

/// Weights of the feature families.
const W_WORD: f32 = 1.0;
const W_BIGRAM: f32 = 0.6;
const W_CHAR: f32 = 0.35;
const W_CHAR5: f32 = 0.3;
const W_NEGATED: f32 = 0.6;
/// Raw score: nearest example, second nearest, centroid.
const MIX_MAX: f32 = 0.55;
const MIX_SECOND: f32 = 0.2;
const MIX_CENTROID: f32 = 0.25;
const KEYWORD_BOOST: f32 = 0.2;
const PATTERN_SCORE: f32 = 0.95;

/// FNV-1a, 64 bits: a fixed hash, so feature ids are the same on every machine.
struct Fnv(u64);

impl Fnv {
    fn new(family: u8) -> Fnv {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.byte(family);
        h
    }
    fn byte(&mut self, b: u8) {
        self.0 ^= b as u64;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn bytes(&mut self, s: &[u8]) {
        for b in s {
            self.byte(*b);
        }
    }
    fn char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.bytes(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Words that negate what follows (or, in Urdu's word order, what comes before): "not
/// received", "order nahi kiya", "maine nahi mangwaya". `t` is the tail of "didn't", "don't"
/// once the apostrophe became a space.
fn is_negation(w: &str) -> bool {
    matches!(
        w,
        "not"
            | "no"
            | "never"
            | "nahi"
            | "na"
            | "mat"
            | "nope"
            | "t"
            | "without"
            | "نہیں"
            | "نہ"
            | "مت"
    )
}

/// Hashed features of a normalised text (words, word pairs, character 3- to 5-grams with word
/// boundaries, and the words a negation reaches), with their family weight. No allocation per
/// feature.
fn raw_features(norm: &str, out: &mut Vec<(u64, f32)>) {
    out.clear();
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    let mut chars: Vec<char> = Vec::with_capacity(32);
    for (i, w) in words.iter().enumerate() {
        let mut h = Fnv::new(b'w');
        h.bytes(w.as_bytes());
        out.push((h.0, W_WORD));
        if let Some(next) = words.get(i + 1) {
            let mut h = Fnv::new(b'b');
            h.bytes(w.as_bytes());
            h.byte(b' ');
            h.bytes(next.as_bytes());
            out.push((h.0, W_BIGRAM));
        }
        if is_negation(w) {
            // Two words after, one before: the negated verb in English and in Urdu.
            let reach = words[i.saturating_sub(1)..(i + 3).min(words.len())].iter();
            for other in reach.filter(|o| !is_negation(o)) {
                let mut h = Fnv::new(b'n');
                h.bytes(other.as_bytes());
                out.push((h.0, W_NEGATED));
            }
        }
        chars.clear();
        chars.push('<');
        chars.extend(w.chars());
        chars.push('>');
        for n in 3..=5 {
            for win in chars.windows(n) {
                let mut h = Fnv::new(b'c');
                for c in win {
                    h.char(*c);
                }
                out.push((h.0, if n == 5 { W_CHAR5 } else { W_CHAR }));
            }
        }
    }
}

/// One intent's training data.
#[derive(Debug, Clone)]
pub struct IntentSpec {
    pub name: String,
    pub examples: Vec<String>,
    pub keywords: Vec<String>,
    pub patterns: Vec<regex::Regex>,
    /// What the pack says the intent is (for the language-model fallback).
    pub description: Option<String>,
    /// What a button naming it says, by language (`settings.clarify`); not a feature.
    pub label: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct IntentModel {
    name: String,
    /// Its examples: `examples[first..first + count]` of the classifier.
    first: usize,
    count: usize,
    /// |Σ examples|², for the centroid's norm (also without one example).
    sum_norm2: f32,
    /// Normalised keywords, each as a sequence of words.
    keywords: Vec<Vec<String>>,
    patterns: Vec<regex::Regex>,
}

/// The trained classifier.
#[derive(Debug, Clone)]
pub struct Classifier {
    vocab: HashMap<u64, u32>,
    idf: Vec<f32>,
    /// Weight given to features never seen in training (they still lower the similarity).
    unseen_idf: f32,
    intents: Vec<IntentModel>,
    /// feature → `(example, weight)`: an inverted index, so a message touches only the
    /// examples that share a feature with it.
    postings: Vec<Vec<(u32, f32)>>,
    /// feature → `(intent, weight of the intent's example sum)`.
    sum_postings: Vec<Vec<(u32, f32)>>,
    /// Per example: its dot product with its intent's example sum (leave-one-out centroids).
    self_dot: Vec<f32>,
    n_examples: usize,
    /// Synonyms and stems applied to examples and messages alike.
    lexicon: crate::lexicon::Lexicon,
    /// The softmax regression over the same features.
    linear: linear::Linear,
    /// How much of the answer is the regression's (the rest is the neighbours').
    mix: f32,
    /// The neighbours' raw scores become a distribution as softmax(raw · `temperature`).
    temperature: f32,
    /// How near the nearest example must be for the answer to count in full: below it the
    /// confidence shrinks in proportion (a message sharing nothing with the pack is no
    /// intent, however the probabilities split between two intents).
    evidence: f32,
    pub threshold: f32,
}

/// The result for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The best intent, or [`UNKNOWN`] below the threshold.
    pub intent: String,
    /// Calibrated confidence of the best intent, 0–1.
    pub confidence: f32,
    /// The best intent even when below the threshold.
    pub best: String,
    /// The probability of every intent, best first (for the decision trace).
    pub scores: Vec<(String, f32)>,
    /// The two intents the bot asks the customer to choose between instead of acting
    /// (`settings.clarify`; set by [`crate::Pack::classify`]).
    pub clarify: Option<(String, String)>,
}

impl Classifier {
    pub fn train(
        specs: &[IntentSpec],
        threshold: f32,
        lexicon: crate::lexicon::Lexicon,
    ) -> Classifier {
        // Vocabulary and document frequencies, over examples and keywords.
        let mut vocab: HashMap<u64, u32> = HashMap::new();
        let mut df: Vec<u32> = Vec::new();
        let mut docs = 0u32;
        let mut feats = Vec::new();
        let mut texts: Vec<Vec<String>> = Vec::new();
        for s in specs {
            let mut t: Vec<String> = s
                .examples
                .iter()
                .map(|e| lexicon.canon(&normalize(e)))
                .collect();
            t.extend(s.keywords.iter().map(|k| lexicon.canon(&normalize(k))));
            for text in &t {
                raw_features(text, &mut feats);
                let mut seen: Vec<u32> = Vec::new();
                for (f, _) in &feats {
                    let next = vocab.len() as u32;
                    let id = *vocab.entry(*f).or_insert(next);
                    if id as usize >= df.len() {
                        df.push(0);
                    }
                    if !seen.contains(&id) {
                        seen.push(id);
                        df[id as usize] += 1;
                    }
                }
                docs += 1;
            }
            texts.push(t);
        }
        let n = docs.max(1) as f32;
        let idf: Vec<f32> = df
            .iter()
            .map(|d| ((1.0 + n) / (1.0 + *d as f32)).ln() + 1.0)
            .collect();
        let unseen_idf = ((1.0 + n) / 1.0).ln() + 1.0;
        let nf = idf.len();
        let mut c = Classifier {
            vocab,
            idf,
            unseen_idf,
            intents: Vec::new(),
            postings: vec![Vec::new(); nf],
            sum_postings: vec![Vec::new(); nf],
            self_dot: Vec::new(),
            n_examples: 0,
            lexicon,
            linear: linear::Linear::default(),
            mix: 0.6,
            temperature: 12.0,
            evidence: 0.1,
            threshold,
        };
        let opt = linear::Options::default();
        let mut example_vecs: Vec<SparseVec> = Vec::new();
        for (ii, (s, t)) in specs.iter().zip(&texts).enumerate() {
            let first = example_vecs.len();
            let vecs: Vec<SparseVec> = t.iter().map(|x| c.vectorize(x)).collect();
            let mut sum: HashMap<u32, f32> = HashMap::new();
            for v in &vecs {
                for (id, w) in v.ids.iter().zip(&v.w) {
                    *sum.entry(*id).or_insert(0.0) += w;
                }
            }
            let mut sum_sorted: Vec<(u32, f32)> = sum.into_iter().collect();
            sum_sorted.sort_by_key(|(id, _)| *id);
            for (id, w) in &sum_sorted {
                c.sum_postings[*id as usize].push((ii as u32, *w));
            }
            let sum_norm2 = sum_sorted.iter().map(|(_, w)| w * w).sum();
            for v in &vecs {
                let d: f32 = v
                    .ids
                    .iter()
                    .zip(&v.w)
                    .map(|(id, w)| {
                        sum_sorted
                            .binary_search_by_key(id, |(k, _)| *k)
                            .map(|i| sum_sorted[i].1 * w)
                            .unwrap_or(0.0)
                    })
                    .sum();
                c.self_dot.push(d);
            }
            c.intents.push(IntentModel {
                name: s.name.clone(),
                first,
                count: vecs.len(),
                sum_norm2,
                keywords: s
                    .keywords
                    .iter()
                    .map(|k| {
                        c.lexicon
                            .canon(&normalize(k))
                            .split(' ')
                            .map(String::from)
                            .collect()
                    })
                    .filter(|k: &Vec<String>| !k.is_empty() && !k[0].is_empty())
                    .collect(),
                patterns: s.patterns.clone(),
            });
            example_vecs.extend(vecs);
        }
        for (ei, v) in example_vecs.iter().enumerate() {
            for (id, w) in v.ids.iter().zip(&v.w) {
                c.postings[*id as usize].push((ei as u32, *w));
            }
        }
        c.n_examples = example_vecs.len();
        // The regression: every example and keyword, an intent with few examples weighted up
        // so it is not drowned by one with many.
        let mean = example_vecs.len() as f32 / c.intents.len().max(1) as f32;
        let docs: Vec<(&SparseVec, usize, f32)> = c
            .intents
            .iter()
            .enumerate()
            .flat_map(|(ii, m)| {
                let weight = (mean / m.count.max(1) as f32).sqrt().clamp(0.5, 2.0);
                example_vecs[m.first..m.first + m.count]
                    .iter()
                    .map(move |v| (v, ii, weight))
            })
            .collect();
        c.linear = linear::Linear::train(&docs, c.idf.len(), c.intents.len(), opt);
        c
    }

    /// The probability of each intent for a message: the regression's and the neighbours'
    /// answers mixed; an intent whose pattern matches is at least [`PATTERN_SCORE`].
    fn probabilities(&self, norm: &str, v: &SparseVec, raw: &[f32]) -> Vec<f32> {
        let k = self.intents.len();
        let mut lin = vec![0.0f32; k];
        self.linear.probs_into(v, &mut lin);
        let mut knn: Vec<f32> = raw.iter().map(|r| r * self.temperature).collect();
        linear::softmax(&mut knn);
        let mut p: Vec<f32> = lin
            .iter()
            .zip(&knn)
            .map(|(a, b)| self.mix * a + (1.0 - self.mix) * b)
            .collect();
        for (pi, m) in p.iter_mut().zip(&self.intents) {
            if m.patterns.iter().any(|re| re.is_match(norm)) {
                *pi = pi.max(PATTERN_SCORE);
            }
        }
        p
    }

    fn vectorize(&self, norm: &str) -> SparseVec {
        let mut feats = Vec::new();
        raw_features(norm, &mut feats);
        let mut acc: Vec<(u32, f32)> = Vec::with_capacity(feats.len());
        let mut unseen_sq = 0.0f32;
        for (f, fam) in &feats {
            match self.vocab.get(f) {
                Some(id) => acc.push((*id, fam * self.idf[*id as usize])),
                None => {
                    let w = fam * self.unseen_idf;
                    unseen_sq += w * w;
                }
            }
        }
        acc.sort_by_key(|(id, _)| *id);
        let mut v = SparseVec::default();
        for (id, w) in acc {
            if v.ids.last() == Some(&id) {
                *v.w.last_mut().expect("non-empty") += w;
            } else {
                v.ids.push(id);
                v.w.push(w);
            }
        }
        // Sub-linear term frequency, then L2 norm including the unseen features.
        for w in v.w.iter_mut() {
            *w = w.signum() * (1.0 + w.abs()).ln();
        }
        let norm = (v.w.iter().map(|w| w * w).sum::<f32>() + unseen_sq * 0.5).sqrt();
        if norm > 0.0 {
            for w in v.w.iter_mut() {
                *w /= norm;
            }
        }
        v
    }

    /// Raw score of each intent for a vector of `canon` (the lexicon's reading of `norm`);
    /// `skip` leaves one example out (what `confusions` measures).
    fn raw_scores(&self, norm: &str, canon: &str, v: &SparseVec, skip: Option<usize>) -> Vec<f32> {
        let mut sims = vec![0.0f32; self.n_examples];
        let mut sums = vec![0.0f32; self.intents.len()];
        for (id, qw) in v.ids.iter().zip(&v.w) {
            for (e, w) in &self.postings[*id as usize] {
                sims[*e as usize] += qw * w;
            }
            for (i, w) in &self.sum_postings[*id as usize] {
                sums[*i as usize] += qw * w;
            }
        }
        let words: Vec<&str> = canon.split(' ').collect();
        self.intents
            .iter()
            .enumerate()
            .map(|(ii, m)| {
                let (mut best, mut second) = (0.0f32, 0.0f32);
                for (ei, s) in sims[m.first..m.first + m.count].iter().enumerate() {
                    if skip == Some(m.first + ei) {
                        continue;
                    }
                    if *s > best {
                        second = best;
                        best = *s;
                    } else if *s > second {
                        second = *s;
                    }
                }
                let cen = match skip {
                    // The centroid without the left-out example e: (Σ − e)·q / |Σ − e|.
                    Some(e) if (m.first..m.first + m.count).contains(&e) => {
                        let n2 = (m.sum_norm2 - 2.0 * self.self_dot[e] + 1.0).max(0.0);
                        if n2 > 1e-9 {
                            (sums[ii] - sims[e]) / n2.sqrt()
                        } else {
                            0.0
                        }
                    }
                    _ if m.sum_norm2 > 0.0 => sums[ii] / m.sum_norm2.sqrt(),
                    _ => 0.0,
                };
                let mut raw = MIX_MAX * best + MIX_SECOND * second + MIX_CENTROID * cen;
                if m.keywords.iter().any(|k| contains_seq(&words, k)) {
                    raw += KEYWORD_BOOST;
                }
                if m.patterns.iter().any(|p| p.is_match(norm)) {
                    raw = raw.max(PATTERN_SCORE);
                }
                raw.min(1.0)
            })
            .collect()
    }

    pub fn classify(&self, text: &str) -> Classification {
        let norm = normalize(text);
        let canon = self.lexicon.canon(&norm);
        let v = self.vectorize(&canon);
        let raw = self.raw_scores(&norm, &canon, &v, None);
        let scores = self.probabilities(&norm, &v, &raw);
        let (top_i, top, _) = top_two(&scores);
        let nearest = raw.iter().copied().fold(0.0f32, f32::max);
        let confidence = if self.intents.is_empty() || norm.is_empty() {
            0.0
        } else {
            top * (nearest / self.evidence).min(1.0)
        };
        // Nearest to the pack's `unrelated` messages: none of the intents. `best` is still the
        // nearest real intent, for the trace.
        let unrelated = self.intents.get(top_i).is_some_and(|m| m.name == UNKNOWN);
        let best = self
            .intents
            .iter()
            .zip(&scores)
            .filter(|(m, _)| m.name != UNKNOWN)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(m, _)| m.name.clone())
            .unwrap_or_else(|| UNKNOWN.to_string());
        let mut ranked: Vec<(String, f32)> = self
            .intents
            .iter()
            .zip(&scores)
            .map(|(m, s)| (m.name.clone(), *s))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        Classification {
            intent: if confidence >= self.threshold && !unrelated {
                best.clone()
            } else {
                UNKNOWN.to_string()
            },
            confidence,
            best,
            scores: ranked,
            clarify: None,
        }
    }

    /// Which intents the classifier confuses on the pack's own examples: each example is
    /// classified with itself left out; `(intent, taken for, examples so taken)` for every
    /// pair, most confused first (what `validate` warns about).
    pub fn confusions(&self, specs: &[IntentSpec]) -> Vec<(String, String, Vec<String>)> {
        let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
        for (ii, s) in specs.iter().enumerate() {
            if s.name == UNKNOWN {
                continue;
            }
            for (ei, ex) in s.examples.iter().enumerate() {
                let norm = normalize(ex);
                let canon = self.lexicon.canon(&norm);
                let v = self.vectorize(&canon);
                let scores = self.raw_scores(&norm, &canon, &v, Some(self.intents[ii].first + ei));
                let (top_i, _, _) = top_two(&scores);
                if top_i == ii {
                    continue;
                }
                let other = &self.intents[top_i].name;
                match out.iter_mut().find(|(a, b, _)| a == &s.name && b == other) {
                    Some(e) => e.2.push(ex.clone()),
                    None => out.push((s.name.clone(), other.clone(), vec![ex.clone()])),
                }
            }
        }
        out.sort_by(|a, b| {
            b.2.len()
                .cmp(&a.2.len())
                .then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1)))
        });
        out
    }

    /// A text as the classifier reads it: normalised, accents dropped, the lexicon's words
    /// for synonyms, stemmed. Two texts that read the same mean the same to the bot (a typed
    /// "Replacement" and a button titled "replacement", "haan" and "Yes").
    pub fn canon(&self, text: &str) -> String {
        let plain: String = text
            .nfd()
            // Latin accents (é → e); Urdu's marks are dropped by `normalize`.
            .filter(|c| !('\u{0300}'..='\u{036F}').contains(c))
            .collect();
        self.lexicon.canon(&normalize(&plain))
    }

    pub fn intent_names(&self) -> impl Iterator<Item = &str> {
        self.intents
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| *n != UNKNOWN)
    }
}

/// Index of the best score, the best score, and its margin over the second.
fn top_two(scores: &[f32]) -> (usize, f32, f32) {
    let (mut bi, mut b, mut s) = (0usize, f32::MIN, 0.0f32);
    for (i, x) in scores.iter().enumerate() {
        if *x > b {
            s = b.max(0.0);
            b = *x;
            bi = i;
        } else if *x > s {
            s = *x;
        }
    }
    if scores.is_empty() {
        return (0, 0.0, 0.0);
    }
    (bi, b, (b - s).max(0.0))
}

fn contains_seq(words: &[&str], k: &[String]) -> bool {
    if k.is_empty() || k.len() > words.len() {
        return false;
    }
    words
        .windows(k.len())
        .any(|w| w.iter().zip(k).all(|(a, b)| *a == b.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_copes_with_real_writing() {
        assert_eq!(
            normalize("Kahaan hai mera ORDER??? 😡😡"),
            "kahan hai mera order 😡"
        );
        assert_eq!(normalize("plzzz jaldi"), "please jaldi");
        assert_eq!(normalize("order #10234 kb milega"), "order 0 kab milega");
        // Urdu digits and Arabic letter variants.
        assert_eq!(normalize("آرڈر ۱۰۲۳۴"), normalize("ارڈر 10234"));
        assert_eq!(normalize("كيا"), normalize("کیا"));
        // Direction marks and hamza spellings phones produce.
        assert_eq!(normalize("\u{200F}آرڈر\u{200E}"), normalize("آرڈر"));
        assert_eq!(normalize("گئے"), normalize("گیے"));
        assert_eq!(normalize("  "), "");
        assert_eq!(normalize("📦❓"), "📦 ❓");
        assert_eq!(normalize("hi👋👋"), "hi 👋");
        assert_eq!(normalize("👍🏽"), "👍");
    }

    fn spec(name: &str, ex: &[&str]) -> IntentSpec {
        IntentSpec {
            name: name.into(),
            examples: ex.iter().map(|s| s.to_string()).collect(),
            keywords: vec![],
            patterns: vec![],
            description: None,
            label: vec![],
        }
    }

    #[test]
    fn unseen_spellings_still_match_and_nonsense_is_unknown() {
        let c = Classifier::train(
            &[
                spec(
                    "order_status",
                    &[
                        "where is my order",
                        "mera order kahan hai",
                        "parcel kab milega",
                        "track my parcel",
                        "order status",
                    ],
                ),
                spec(
                    "cancel_order",
                    &[
                        "cancel my order",
                        "order cancel kar dein",
                        "mujhe nahi chahiye",
                        "cancel it please",
                        "don't send it",
                    ],
                ),
            ],
            0.5,
            crate::lexicon::Lexicon::default(),
        );
        let r = c.classify("mera ordr kahaaan hy");
        assert_eq!(r.intent, "order_status", "{r:?}");
        let r = c.classify("xyzzy qwerty");
        assert_eq!(r.intent, UNKNOWN, "{r:?}");
        // Deterministic: the same answer twice.
        assert_eq!(c.classify("cancel karo"), c.classify("cancel karo"));
    }
}
