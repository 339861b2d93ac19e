//! The fixed lexicon of the synthetic language pair and its word-formation rules (the grammar is in
//! the parent module). Kept separate because the tables are long and rarely change.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gender {
    M,
    F,
    N,
}
pub(super) use Gender::{F, M, N};

/// (English singular, English plural, target stem, target gender).
pub(super) const NOUNS: [(&str, &str, &str, Gender); 48] = [
    ("cat", "cats", "mirl", F),
    ("dog", "dogs", "hosk", M),
    ("man", "men", "varn", M),
    ("woman", "women", "selm", F),
    ("child", "children", "pilt", N),
    ("teacher", "teachers", "dozak", M),
    ("farmer", "farmers", "agrel", M),
    ("bird", "birds", "fenk", F),
    ("horse", "horses", "kaval", M),
    ("king", "kings", "regol", M),
    ("queen", "queens", "reginal", F),
    ("house", "houses", "domt", N),
    ("tree", "trees", "arbel", F),
    ("river", "rivers", "flusk", M),
    ("book", "books", "libr", N),
    ("apple", "apples", "pomel", N),
    ("boat", "boats", "navit", F),
    ("city", "cities", "urbat", F),
    ("garden", "gardens", "hortel", M),
    ("window", "windows", "fenst", N),
    ("stone", "stones", "lapid", M),
    ("letter", "letters", "episk", F),
    ("table", "tables", "mensk", F),
    ("mountain", "mountains", "montar", M),
    ("doctor", "doctors", "medik", M),
    ("soldier", "soldiers", "milet", M),
    ("friend", "friends", "amik", M),
    ("baker", "bakers", "panet", M),
    ("fox", "foxes", "vulp", F),
    ("wolf", "wolves", "lupen", M),
    ("mouse", "mice", "murel", F),
    ("sheep", "sheep", "ovink", N),
    ("fish", "fish", "piskol", M),
    ("girl", "girls", "puelt", F),
    ("boy", "boys", "puerk", M),
    ("car", "cars", "kurt", N),
    ("bridge", "bridges", "ponst", F),
    ("road", "roads", "viat", F),
    ("door", "doors", "portel", N),
    ("cup", "cups", "kalik", N),
    ("song", "songs", "kantel", N),
    ("student", "students", "diskel", M),
    ("sister", "sisters", "soral", F),
    ("brother", "brothers", "fratel", M),
    ("island", "islands", "insul", F),
    ("forest", "forests", "silvan", N),
    ("village", "villages", "vikel", N),
    ("lamp", "lamps", "lukern", F),
];

/// (English, target stem).
pub(super) const ADJS: [(&str, &str); 24] = [
    ("big", "grand"),
    ("small", "pikol"),
    ("old", "vetr"),
    ("young", "junk"),
    ("red", "rub"),
    ("green", "verd"),
    ("happy", "fel"),
    ("sad", "trist"),
    ("quick", "rapid"),
    ("quiet", "kalm"),
    ("dark", "obskur"),
    ("bright", "klar"),
    ("tall", "alt"),
    ("heavy", "grav"),
    ("cold", "frig"),
    ("warm", "kald"),
    ("new", "nov"),
    ("strange", "mirab"),
    ("kind", "benig"),
    ("angry", "irat"),
    ("tired", "fatig"),
    ("clever", "sagak"),
    ("poor", "paupr"),
    ("rich", "divit"),
];

/// (English base, English 3sg present, English past, target stem, transitive). Transitive verbs come
/// first: `transitive_verb` in the parent module samples from that prefix.
pub(super) const VERBS: [(&str, &str, &str, &str, bool); 27] = [
    ("see", "sees", "saw", "vid", true),
    ("like", "likes", "liked", "am", true),
    ("follow", "follows", "followed", "sekv", true),
    ("find", "finds", "found", "trov", true),
    ("carry", "carries", "carried", "port", true),
    ("help", "helps", "helped", "juv", true),
    ("watch", "watches", "watched", "spekt", true),
    ("paint", "paints", "painted", "pikt", true),
    ("buy", "buys", "bought", "kompr", true),
    ("sell", "sells", "sold", "vend", true),
    ("chase", "chases", "chased", "kas", true),
    ("visit", "visits", "visited", "vizit", true),
    ("know", "knows", "knew", "kon", true),
    ("hear", "hears", "heard", "aud", true),
    ("call", "calls", "called", "vok", true),
    ("feed", "feeds", "fed", "nutr", true),
    ("draw", "draws", "drew", "desegn", true),
    ("sleep", "sleeps", "slept", "dorm", false),
    ("run", "runs", "ran", "kur", false),
    ("sing", "sings", "sang", "kant", false),
    ("wait", "waits", "waited", "atend", false),
    ("fall", "falls", "fell", "kad", false),
    ("laugh", "laughs", "laughed", "rid", false),
    ("swim", "swims", "swam", "nat", false),
    ("dance", "dances", "danced", "salt", false),
    ("cry", "cries", "cried", "plor", false),
    ("work", "works", "worked", "labor", false),
];

/// (English preposition, target postposition).
pub(super) const PREPS: [(&str, &str); 8] = [
    ("near", "apud"),
    ("behind", "post"),
    ("under", "sub"),
    ("with", "kun"),
    ("beside", "flank"),
    ("above", "supr"),
    ("inside", "intra"),
    ("toward", "versu"),
];

pub(super) const EN_UNITS: [&str; 20] = [
    "",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
pub(super) const EN_TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
pub(super) const TGT_UNITS: [&str; 10] = ["", "mun", "dos", "tir", "kav", "pin", "sas", "sev", "ot", "nev"];
pub(super) const TGT_AND: &str = "kaj";
pub(super) const TGT_NUM_AND: &str = "ve";

/// The agreement ending (see the module doc).
pub(super) fn agr(g: Gender, plural: bool) -> &'static str {
    match (g, plural) {
        (M, false) => "o",
        (M, true) => "oi",
        (F, false) => "a",
        (F, true) => "ai",
        (N, false) => "e",
        (N, true) => "ei",
    }
}

pub(super) fn tgt_noun(noun: usize, plural: bool) -> String {
    let (_, _, stem, g) = NOUNS[noun];
    if !plural {
        return stem.to_string();
    }
    let suffix = match g {
        M => "en",
        F => "ar",
        N => "u",
    };
    format!("{stem}{suffix}")
}

pub(super) fn tgt_verb(verb: usize, plural: bool, past: bool) -> String {
    let suffix = match (past, plural) {
        (false, false) => "es",
        (false, true) => "en",
        (true, false) => "it",
        (true, true) => "int",
    };
    format!("{}{suffix}", VERBS[verb].3)
}

pub(super) fn en_verb(verb: usize, plural: bool, past: bool) -> &'static str {
    let (base, sg, pst, _, _) = VERBS[verb];
    match (past, plural) {
        (true, _) => pst,
        (false, false) => sg,
        (false, true) => base,
    }
}

/// 1..=99 in English words ("twenty-three").
pub(super) fn en_number(n: u32) -> String {
    let n = n as usize % 100;
    if n < 20 {
        return EN_UNITS[n].to_string();
    }
    let (t, u) = (n / 10, n % 10);
    if u == 0 {
        EN_TENS[t].to_string()
    } else {
        format!("{}-{}", EN_TENS[t], EN_UNITS[u])
    }
}

/// 1..=99 in the target: units before tens ("tir ve doszan" = 23).
pub(super) fn tgt_number(n: u32) -> Vec<String> {
    let n = n as usize % 100;
    let (t, u) = (n / 10, n % 10);
    match t {
        0 => vec![TGT_UNITS[u].to_string()],
        1 => vec![format!("{}dek", TGT_UNITS[u])],
        _ => {
            let tens = format!("{}zan", TGT_UNITS[t]);
            if u == 0 {
                vec![tens]
            } else {
                vec![TGT_UNITS[u].to_string(), TGT_NUM_AND.to_string(), tens]
            }
        }
    }
}
