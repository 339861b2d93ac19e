//! A built-in synthetic language pair, so that everything (training, search, decoding) runs without
//! any data files, deterministically from a seed.
//!
//! The source is English-like, the target an invented language ("Tgt") with its own lexicon. The
//! pair is built to need real capacity: lexical gender must be memorised, agreement spans relative
//! clauses, and several constructions reorder. Sentences are lower case and end with `.`.
//!
//! Grammar (source side; `?` optional, `|` alternatives):
//! ```text
//! S      -> SUBJ VERB OBJ? PP? "."
//! SUBJ   -> NP | NP "and" NP             (coordination makes the verb plural)
//! NP     -> DET ADJ{0,2} NOUN REL?       (REL only on main-clause subject/object)
//! DET    -> "the" | "a"/"an" (singular) | NUMBER (2..99 written out, plural)
//! REL    -> "that" VERB OBJ?             (subject relative: "the dog that sees the cat")
//!         | "that" NP VERB               (object relative:  "the dog that the cat sees")
//! PP     -> PREP NP                      (near, behind, under, with, beside, above, inside, toward)
//! VERB   -> present (3sg "-s" vs plural, agreeing with its subject) | past (no agreement)
//! ```
//! English has irregular plurals (men, children, mice, sheep, wolves) and pasts (saw, found, ran).
//!
//! Target rules:
//! * nouns have a lexical gender (m/f/n) not visible in the stem; plural suffix by gender
//!   (m `-en`, f `-ar`, n `-u`);
//! * agreement ending AGR(gender, number): m `o`/`oi`, f `a`/`ai`, n `e`/`ei`, carried by the
//!   definite article `l`+AGR, the indefinite article `un`+AGR, every adjective stem+AGR, and the
//!   relative pronoun (`k`+AGR for subject relatives, `j`+AGR for object relatives) of its noun;
//! * adjectives follow the noun, in reverse order ("the big red dog" -> "lo hosk rubo grando");
//! * verbs agree in number with their subject in both tenses: present `-es`/`-en`, past
//!   `-it`/`-int` (English past shows no number, so the target must look back across the
//!   relative clause to the subject);
//! * relative clauses are verb-final; prepositions become postpositions and the prepositional
//!   phrase moves to the front of the sentence;
//! * numbers put units before tens: 23 = "tir ve doszan" (units `mun dos tir kav pin sas sev ot nev`,
//!   teens unit+`dek`, tens unit+`zan`); a number replaces the article.
//!
//! Example: "the dogs that the old woman saw slept near a red boat." ->
//! "una navit ruba apud loi hosken joi la selm vetra vidit dormint."

use std::collections::HashSet;

use rand::Rng;

use crate::{Error, Result};

mod lexicon;

use lexicon::*;

/// Train/valid/test splits of the synthetic corpus, `(source, target)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticCorpus {
    pub train: Vec<(String, String)>,
    pub valid: Vec<(String, String)>,
    pub test: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Det {
    The,
    A,
    Num(u32),
}

#[derive(Debug, Clone)]
struct Np {
    det: Det,
    noun: usize,
    plural: bool,
    adjs: Vec<usize>,
    rel: Option<Box<Rel>>,
}

#[derive(Debug, Clone)]
enum Rel {
    /// "that VERB OBJ?": the head noun is the relative clause's subject.
    Subj { verb: usize, past: bool, obj: Option<Np> },
    /// "that NP VERB": the head noun is the relative clause's object.
    Obj { subj: Np, verb: usize, past: bool },
}

#[derive(Debug, Clone)]
struct Clause {
    subj: Vec<Np>,
    verb: usize,
    past: bool,
    obj: Option<Np>,
    pp: Option<(usize, Np)>,
}

impl Clause {
    fn subj_plural(&self) -> bool {
        self.subj.len() > 1 || self.subj.iter().any(|np| np.plural)
    }
}

fn pick<R: Rng>(rng: &mut R, n: usize) -> usize {
    rng.random_range(0..n)
}

fn transitive_verb<R: Rng>(rng: &mut R) -> usize {
    let n_trans = VERBS.iter().filter(|v| v.4).count();
    pick(rng, n_trans)
}

fn any_verb<R: Rng>(rng: &mut R) -> usize {
    pick(rng, VERBS.len())
}

fn sample_np<R: Rng>(rng: &mut R, allow_rel: bool) -> Np {
    let noun = pick(rng, NOUNS.len());
    let r: f64 = rng.random();
    let (det, plural) = if r < 0.35 {
        (Det::The, false)
    } else if r < 0.6 {
        (Det::The, true)
    } else if r < 0.82 {
        (Det::A, false)
    } else {
        (Det::Num(rng.random_range(2..100)), true)
    };
    let n_adj = match rng.random_range(0..20) {
        0..10 => 0,
        10..17 => 1,
        _ => 2,
    };
    let mut adjs = Vec::with_capacity(n_adj);
    while adjs.len() < n_adj {
        let a = pick(rng, ADJS.len());
        if !adjs.contains(&a) {
            adjs.push(a);
        }
    }
    let rel = if allow_rel && rng.random_bool(0.4) {
        let past = rng.random_bool(0.4);
        Some(Box::new(if rng.random_bool(0.5) {
            let verb = any_verb(rng);
            let obj = VERBS[verb].4.then(|| sample_np(rng, false));
            Rel::Subj { verb, past, obj }
        } else {
            Rel::Obj { subj: sample_np(rng, false), verb: transitive_verb(rng), past }
        }))
    } else {
        None
    };
    Np { det, noun, plural, adjs, rel }
}

fn sample_clause<R: Rng>(rng: &mut R) -> Clause {
    let subj = if rng.random_bool(0.1) { vec![sample_np(rng, false), sample_np(rng, false)] } else { vec![sample_np(rng, true)] };
    let verb = any_verb(rng);
    // At most one relative clause per sentence keeps lengths moderate (under ~30 words).
    let obj_rel = subj.iter().all(|np| np.rel.is_none());
    let obj = VERBS[verb].4.then(|| sample_np(rng, obj_rel));
    let pp = rng.random_bool(0.4).then(|| (pick(rng, PREPS.len()), sample_np(rng, false)));
    Clause { subj, verb, past: rng.random_bool(0.4), obj, pp }
}

fn en_np(np: &Np, out: &mut Vec<String>) {
    let (sg, pl, _, _) = NOUNS[np.noun];
    let noun = if np.plural { pl } else { sg };
    match np.det {
        Det::The => out.push("the".into()),
        Det::A => {
            let next = np.adjs.first().map_or(noun, |&a| ADJS[a].0);
            let vowel = next.starts_with(['a', 'e', 'i', 'o', 'u']);
            out.push(if vowel { "an" } else { "a" }.into());
        }
        Det::Num(n) => out.push(en_number(n)),
    }
    out.extend(np.adjs.iter().map(|&a| ADJS[a].0.to_string()));
    out.push(noun.to_string());
    match np.rel.as_deref() {
        None => {}
        Some(Rel::Subj { verb, past, obj }) => {
            out.push("that".into());
            out.push(en_verb(*verb, np.plural, *past).into());
            if let Some(o) = obj {
                en_np(o, out);
            }
        }
        Some(Rel::Obj { subj, verb, past }) => {
            out.push("that".into());
            en_np(subj, out);
            out.push(en_verb(*verb, subj.plural, *past).into());
        }
    }
}

fn tgt_np(np: &Np, out: &mut Vec<String>) {
    let g = NOUNS[np.noun].3;
    let a = agr(g, np.plural);
    match np.det {
        Det::The => out.push(format!("l{a}")),
        Det::A => out.push(format!("un{a}")),
        Det::Num(n) => out.extend(tgt_number(n)),
    }
    out.push(tgt_noun(np.noun, np.plural));
    out.extend(np.adjs.iter().rev().map(|&j| format!("{}{a}", ADJS[j].1)));
    match np.rel.as_deref() {
        None => {}
        Some(Rel::Subj { verb, past, obj }) => {
            out.push(format!("k{a}"));
            if let Some(o) = obj {
                tgt_np(o, out);
            }
            out.push(tgt_verb(*verb, np.plural, *past));
        }
        Some(Rel::Obj { subj, verb, past }) => {
            out.push(format!("j{a}"));
            tgt_np(subj, out);
            out.push(tgt_verb(*verb, subj.plural, *past));
        }
    }
}

/// Joins words and attaches the final period.
fn finish(words: Vec<String>) -> String {
    let mut s = words.join(" ");
    s.push('.');
    s
}

fn render_en(c: &Clause) -> String {
    let mut w = Vec::new();
    for (i, np) in c.subj.iter().enumerate() {
        if i > 0 {
            w.push("and".into());
        }
        en_np(np, &mut w);
    }
    w.push(en_verb(c.verb, c.subj_plural(), c.past).into());
    if let Some(o) = &c.obj {
        en_np(o, &mut w);
    }
    if let Some((p, np)) = &c.pp {
        w.push(PREPS[*p].0.into());
        en_np(np, &mut w);
    }
    finish(w)
}

fn render_tgt(c: &Clause) -> String {
    let mut w = Vec::new();
    if let Some((p, np)) = &c.pp {
        tgt_np(np, &mut w);
        w.push(PREPS[*p].1.into());
    }
    for (i, np) in c.subj.iter().enumerate() {
        if i > 0 {
            w.push(TGT_AND.into());
        }
        tgt_np(np, &mut w);
    }
    w.push(tgt_verb(c.verb, c.subj_plural(), c.past));
    if let Some(o) = &c.obj {
        tgt_np(o, &mut w);
    }
    finish(w)
}

/// Most pairs [`synthetic_corpus`] generates (all splits together): a few GiB of text, far past
/// what the built-in corpus is for, and small enough that a mistyped size is an error rather than
/// an allocation that aborts.
pub const MAX_SYNTHETIC_PAIRS: usize = 10_000_000;

/// The total pair count of the three splits, or an error when it passes [`MAX_SYNTHETIC_PAIRS`].
pub fn check_synthetic_sizes(n_train: usize, n_valid: usize, n_test: usize) -> Result<usize> {
    n_train.checked_add(n_valid).and_then(|n| n.checked_add(n_test)).filter(|&n| n <= MAX_SYNTHETIC_PAIRS).ok_or_else(|| {
        Error::invalid(
            "synthetic corpus",
            format!("{n_train} training + {n_valid} validation + {n_test} test pairs is more than the limit of {MAX_SYNTHETIC_PAIRS}"),
        )
    })
}

/// Generates the synthetic corpus deterministically from `seed`. Source sentences are unique across
/// all three splits, so valid/test never repeat a training sentence. More than
/// [`MAX_SYNTHETIC_PAIRS`] in all is an error.
pub fn synthetic_corpus(seed: u64, n_train: usize, n_valid: usize, n_test: usize) -> Result<SyntheticCorpus> {
    let total = check_synthetic_sizes(n_train, n_valid, n_test)?;
    let mut rng = crate::rng::seeded(seed);
    let mut seen = HashSet::with_capacity(total);
    let mut pairs = Vec::with_capacity(total);
    // The sentence space is astronomically larger than any requested size, so duplicates are rare;
    // the attempt cap only guards against a pathological request, after which repeats are allowed.
    let mut attempts = 0usize;
    while pairs.len() < total {
        let c = sample_clause(&mut rng);
        let en = render_en(&c);
        attempts += 1;
        if !seen.insert(en.clone()) && attempts < 100 * total {
            continue;
        }
        pairs.push((en, render_tgt(&c)));
    }
    let test = pairs.split_off(n_train + n_valid);
    let valid = pairs.split_off(n_train);
    Ok(SyntheticCorpus { train: pairs, valid, test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn deterministic_sizes_and_seed_dependent() {
        let a = synthetic_corpus(1, 2000, 100, 100).unwrap();
        let b = synthetic_corpus(1, 2000, 100, 100).unwrap();
        let c = synthetic_corpus(2, 2000, 100, 100).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.train, c.train);
        assert_eq!((a.train.len(), a.valid.len(), a.test.len()), (2000, 100, 100));
        let train: HashSet<&String> = a.train.iter().map(|p| &p.0).collect();
        assert!(a.valid.iter().chain(&a.test).all(|p| !train.contains(&p.0)));
        let too_many = synthetic_corpus(0, usize::MAX, 1, 0).unwrap_err().to_string();
        assert!(too_many.contains("training") && too_many.contains("limit"), "{too_many}");
        assert!(synthetic_corpus(0, MAX_SYNTHETIC_PAIRS, 1, 0).is_err());
        let big = synthetic_corpus(0, 20_000, 1000, 1000).unwrap();
        assert_eq!(big.train.len(), 20_000);
        let max_words = big.train.iter().map(|p| p.0.split(' ').count().max(p.1.split(' ').count())).max().unwrap_or(0);
        assert!(max_words <= 40, "{max_words}");
    }

    #[test]
    fn transitive_verbs_first() {
        let n = VERBS.iter().filter(|v| v.4).count();
        assert!(VERBS[..n].iter().all(|v| v.4));
    }

    #[test]
    fn numbers() {
        assert_eq!(en_number(23), "twenty-three");
        assert_eq!(en_number(14), "fourteen");
        assert_eq!(en_number(90), "ninety");
        assert_eq!(tgt_number(23), ["tir", "ve", "doszan"]);
        assert_eq!(tgt_number(14), ["kavdek"]);
        assert_eq!(tgt_number(10), ["dek"]);
        assert_eq!(tgt_number(90), ["nevzan"]);
        assert_eq!(tgt_number(7), ["sev"]);
    }

    fn np(det: Det, noun: &str, plural: bool, adjs: &[&str], rel: Option<Rel>) -> Np {
        let noun = NOUNS.iter().position(|n| n.0 == noun).unwrap();
        let adjs = adjs.iter().map(|a| ADJS.iter().position(|x| x.0 == *a).unwrap()).collect();
        Np { det, noun, plural, adjs, rel: rel.map(Box::new) }
    }

    fn verb(v: &str) -> usize {
        VERBS.iter().position(|x| x.0 == v).unwrap()
    }

    #[test]
    fn golden_sentences() {
        // Agreement across an object relative clause, past tense (invisible in English).
        let c = Clause {
            subj: vec![np(
                Det::The,
                "dog",
                true,
                &[],
                Some(Rel::Obj { subj: np(Det::The, "woman", false, &["old"], None), verb: verb("see"), past: true }),
            )],
            verb: verb("sleep"),
            past: true,
            obj: None,
            pp: Some((0, np(Det::A, "boat", false, &["red"], None))),
        };
        assert_eq!(render_en(&c), "the dogs that the old woman saw slept near a red boat.");
        assert_eq!(render_tgt(&c), "una navit ruba apud loi hosken joi la selm vetra vidit dormint.");
        // Subject relative, coordination-free, number determiner, two adjectives reversed, "an".
        let c = Clause {
            subj: vec![np(
                Det::Num(23),
                "child",
                true,
                &["big", "happy"],
                Some(Rel::Subj { verb: verb("like"), past: false, obj: Some(np(Det::A, "apple", false, &[], None)) }),
            )],
            verb: verb("find"),
            past: false,
            obj: Some(np(Det::A, "mouse", false, &[], None)),
            pp: None,
        };
        assert_eq!(render_en(&c), "twenty-three big happy children that like an apple find a mouse.");
        assert_eq!(render_tgt(&c), "tir ve doszan piltu felei grandei kei une pomel amen troven una murel.");
        // Coordination makes the verb plural.
        let c = Clause {
            subj: vec![np(Det::The, "cat", false, &[], None), np(Det::The, "king", false, &[], None)],
            verb: verb("laugh"),
            past: false,
            obj: None,
            pp: None,
        };
        assert_eq!(render_en(&c), "the cat and the king laugh.");
        assert_eq!(render_tgt(&c), "la mirl kaj lo regol riden.");
    }

    /// Every target word form (noun, adjective, verb, article, pronoun, number, postposition) maps
    /// to one analysis, so the agreement check below can parse the output unambiguously.
    /// (word class, agreement features) of a target word form.
    type Analysis = (&'static str, Option<(Gender, bool)>);

    fn target_forms() -> HashMap<String, Analysis> {
        let mut m = HashMap::new();
        let mut add = |w: String, kind: &'static str, a: Option<(Gender, bool)>| {
            assert!(m.insert(w.clone(), (kind, a)).is_none(), "ambiguous target form {w}");
        };
        for g in [M, F, N] {
            for pl in [false, true] {
                let a = agr(g, pl);
                for (prefix, kind) in [("l", "det"), ("un", "det"), ("k", "rel"), ("j", "rel")] {
                    if !(prefix == "un" && pl) {
                        add(format!("{prefix}{a}"), kind, Some((g, pl)));
                    }
                }
                for adj in ADJS {
                    add(format!("{}{a}", adj.1), "adj", Some((g, pl)));
                }
            }
        }
        for (i, n) in NOUNS.iter().enumerate() {
            add(tgt_noun(i, false), "noun", Some((n.3, false)));
            add(tgt_noun(i, true), "noun", Some((n.3, true)));
        }
        for v in 0..VERBS.len() {
            for (pl, past) in [(false, false), (true, false), (false, true), (true, true)] {
                add(tgt_verb(v, pl, past), "verb", None);
            }
        }
        for p in PREPS {
            add(p.1.to_string(), "post", None);
        }
        add(TGT_AND.to_string(), "and", None);
        let mut numbers: Vec<String> = (2..100).flat_map(tgt_number).collect();
        numbers.sort();
        numbers.dedup();
        for w in numbers {
            add(w, "num", None);
        }
        m
    }

    #[test]
    fn target_agreement_on_a_sample() {
        let forms = target_forms();
        let corpus = synthetic_corpus(5, 3000, 0, 0).unwrap();
        let mut checked = 0;
        for (_, tgt) in &corpus.train {
            let words: Vec<&str> = tgt.trim_end_matches('.').split(' ').collect();
            for (i, w) in words.iter().enumerate() {
                let Some(("noun", Some(agreement))) = forms.get(*w).copied() else { continue };
                // The word before a noun is its article (agreeing) or the end of a number (plural).
                match forms.get(words[i - 1]).copied() {
                    Some(("det", a)) => assert_eq!(a, Some(agreement), "{tgt}"),
                    Some(("num", _)) => assert!(agreement.1, "{tgt}"),
                    other => panic!("noun {w} preceded by {other:?} in {tgt}"),
                }
                // Adjectives and a relative pronoun after it agree too.
                for next in &words[i + 1..] {
                    match forms.get(*next).copied() {
                        Some(("adj", a)) => assert_eq!(a, Some(agreement), "{tgt}"),
                        Some(("rel", a)) => {
                            assert_eq!(a, Some(agreement), "{tgt}");
                            break;
                        }
                        _ => break,
                    }
                    checked += 1;
                }
            }
            assert!(words.iter().all(|w| forms.contains_key(*w)), "unknown word in {tgt}");
        }
        assert!(checked > 1000, "{checked}");
    }
}
