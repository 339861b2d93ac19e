//! A joined (source + target) BPE tokenizer, a thin wrapper over the Hugging Face `tokenizers` crate.
//!
//! Why a wrapper: the rest of the crate needs a handful of fixed conventions (special ids, eos
//! appended, decoding stops at eos) and our own error type; and the saved `tokenizer.json` stays the
//! standard Hugging Face format so that other tools can load it unchanged.
//!
//! Conventions:
//! * special tokens at fixed ids: `<pad>` = 0, `<s>` = 1 (bos), `</s>` = 2 (eos), `<unk>` = 3;
//! * Metaspace pre-tokenization (spaces become `▁`, prepended once at the start) with the matching
//!   Metaspace decoder, so `decode(encode(s)) == s` for text without leading/trailing/duplicate
//!   whitespace and whose characters were seen in training (unseen characters become `<unk>`);
//! * a `TemplateProcessing` post-processor `$A </s>`, so the file encodes identically elsewhere
//!   (HF `encode(text, add_special_tokens=True)` appends `</s>` like [`Tokenizer::encode`]);
//! * the text `</s>` (or any special token's text) inside a sentence is encoded as ordinary
//!   characters, never as the control token (a runtime setting; plain HF loaders differ here only).

use std::path::Path;

use tokenizers::decoders::metaspace::{Metaspace, PrependScheme};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

use crate::fsio::write_atomic;
use crate::{Error, Result};

/// Id of `<pad>`; also the ignore index of the loss.
pub const PAD_ID: u32 = 0;
/// Id of `<s>` (beginning of sentence, first decoder input).
pub const BOS_ID: u32 = 1;
/// Id of `</s>` (end of sentence, appended to every encoded sentence).
pub const EOS_ID: u32 = 2;
/// Id of `<unk>` (characters not seen when the BPE was trained).
pub const UNK_ID: u32 = 3;
/// The special tokens in id order.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

/// Largest vocabulary [`Tokenizer::train`] builds (translation BPEs use 8k-64k entries).
pub const MAX_VOCAB_SIZE: usize = 1 << 20;

/// Options of [`Tokenizer::train`].
#[derive(Debug, Clone)]
pub struct BpeConfig {
    /// Total vocabulary size including the 4 special tokens and the character alphabet.
    pub vocab_size: usize,
    /// Pairs seen fewer times than this are never merged.
    pub min_frequency: u64,
    /// Keep at most this many distinct characters in the alphabet (rarer ones become `<unk>`);
    /// `None` keeps all. Guards the vocabulary against a long tail of stray symbols.
    pub limit_alphabet: Option<usize>,
}

impl Default for BpeConfig {
    fn default() -> Self {
        BpeConfig { vocab_size: 8000, min_frequency: 2, limit_alphabet: Some(1000) }
    }
}

/// A trained BPE tokenizer with the crate's conventions (see the module doc).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

/// Converts a `tokenizers` error (a boxed `dyn Error`) into ours.
fn tk_err(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::invalid(op, e.to_string())
}

impl Tokenizer {
    /// Trains a joined BPE over `texts` (pass source and target sentences together, so that both
    /// languages share one vocabulary, as the shared-embedding model needs).
    pub fn train<I, S>(texts: I, config: &BpeConfig) -> Result<Tokenizer>
    where
        I: IntoIterator<Item = S>,
        I::IntoIter: Send,
        S: AsRef<str> + Send,
    {
        const OP: &str = "Tokenizer::train";
        if config.vocab_size <= SPECIAL_TOKENS.len() {
            return Err(Error::invalid(OP, format!("vocab_size {} must exceed the 4 special tokens", config.vocab_size)));
        }
        if config.vocab_size > MAX_VOCAB_SIZE {
            // The BPE trainer sizes its tables by the request and would abort on an absurd one.
            return Err(Error::invalid(OP, format!("vocab_size {} is above the limit of {MAX_VOCAB_SIZE}", config.vocab_size)));
        }
        let bpe = BPE::builder().unk_token(SPECIAL_TOKENS[UNK_ID as usize].to_string()).build().map_err(|e| tk_err(OP, e))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(metaspace()));
        inner.with_decoder(Some(metaspace()));
        // The trainer puts its special tokens first, in order, which pins their ids to 0..4.
        let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
        let mut builder = BpeTrainer::builder()
            .vocab_size(config.vocab_size)
            .min_frequency(config.min_frequency)
            .show_progress(false)
            .special_tokens(specials);
        if let Some(limit) = config.limit_alphabet {
            builder = builder.limit_alphabet(limit);
        }
        let mut trainer = TrainerWrapper::BpeTrainer(builder.build());
        inner.train(&mut trainer, texts.into_iter()).map_err(|e| tk_err(OP, e))?;
        let post = TemplateProcessing::builder()
            .try_single("$A </s>")
            .and_then(|b| b.try_pair("$A </s> $B:1 </s>:1"))
            .map_err(|e| tk_err(OP, e))?
            .special_tokens(vec![(SPECIAL_TOKENS[EOS_ID as usize], EOS_ID)])
            .build()
            .map_err(|e| tk_err(OP, e))?;
        inner.with_post_processor(Some(post));
        Self::wrap(inner, Path::new("<trained>"))
    }

    /// Applies the runtime settings (not stored in the JSON) and validates the special ids.
    fn wrap(mut inner: tokenizers::Tokenizer, origin: &Path) -> Result<Tokenizer> {
        // Text that happens to contain "</s>" or "<pad>" is data, not control: encode it as ordinary
        // characters so that a corpus line can never inject an eos mid-sentence.
        inner.set_encode_special_tokens(true);
        let tok = Tokenizer { inner };
        tok.check_specials(origin)?;
        tok.check_ids(origin)?;
        Ok(tok)
    }

    /// The ids must be exactly `0..vocab_size`, each naming one token: the model's embedding has
    /// `vocab_size` rows, so an id past it would index out of range, and an id shared by two
    /// tokens (or one no token has) would make words vanish or decode as another.
    fn check_ids(&self, origin: &Path) -> Result<()> {
        let bad = |msg: String| Error::Format { path: origin.to_path_buf(), msg };
        let mut by_id: Vec<(u32, &String)> = Vec::new();
        let vocab = self.inner.get_vocab(true);
        by_id.extend(vocab.iter().map(|(t, &id)| (id, t)));
        by_id.sort();
        if by_id.len() > MAX_VOCAB_SIZE {
            return Err(bad(format!("{} tokens, above the limit of {MAX_VOCAB_SIZE}", by_id.len())));
        }
        for (i, pair) in by_id.windows(2).enumerate() {
            if pair[0].0 == pair[1].0 {
                return Err(bad(format!("tokens {:?} and {:?} share id {}", pair[0].1, pair[1].1, pair[0].0)));
            }
            if pair[0].0 as usize != i {
                return Err(bad(format!("no token has id {i}: ids must run from 0 without gaps")));
            }
        }
        if let Some(&(last, t)) = by_id.last() {
            if last as usize + 1 != by_id.len() {
                return Err(bad(format!(
                    "token {t:?} has id {last} but there are {} tokens: ids must run from 0 without gaps",
                    by_id.len()
                )));
            }
        }
        if self.vocab_size() != by_id.len() {
            return Err(bad(format!("the vocabulary size is {} but {} tokens have ids", self.vocab_size(), by_id.len())));
        }
        Ok(())
    }

    /// Loads a `tokenizer.json` and checks that its special tokens sit at the crate's fixed ids.
    pub fn load(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_bytes(&bytes, path)
    }

    /// Parses the JSON of a `tokenizer.json` (`origin` only names it in errors).
    pub fn from_json_bytes(bytes: &[u8], origin: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Format { path: origin.to_path_buf(), msg: format!("not a valid tokenizer.json: {e}") })?;
        Self::wrap(inner, origin)
    }

    /// Rejects tokenizers whose special tokens are not at 0..4: the model and the loss hard-code them.
    fn check_specials(&self, origin: &Path) -> Result<()> {
        for (id, name) in SPECIAL_TOKENS.iter().enumerate() {
            if self.inner.token_to_id(name) != Some(id as u32) {
                return Err(Error::Format {
                    path: origin.to_path_buf(),
                    msg: format!("special token {name} must have id {id}, found {:?}", self.inner.token_to_id(name)),
                });
            }
        }
        Ok(())
    }

    /// The canonical JSON (compact) that [`Tokenizer::save`] writes and [`Tokenizer::hash`] hashes.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| tk_err("Tokenizer::to_json", e))
    }

    /// Saves `tokenizer.json` atomically: a temporary file in the same directory, then a rename, so a
    /// crash never leaves a half-written tokenizer next to a checkpoint.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.to_json()?;
        write_atomic(path, json.as_bytes())
    }

    /// A stable 64-bit content hash (FNV-1a over the canonical JSON), as 16 hex digits. Stored in
    /// checkpoint metadata so that a checkpoint is never used with a different vocabulary.
    pub fn hash(&self) -> Result<String> {
        Ok(format!("{:016x}", fnv1a64(self.to_json()?.as_bytes())))
    }

    /// Vocabulary size including the special tokens (the embedding table's row count).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes one sentence to ids with `</s>` appended.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| tk_err("Tokenizer::encode", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes many sentences (in parallel inside `tokenizers`), each with `</s>` appended.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self.inner.encode_batch(texts.to_vec(), true).map_err(|e| tk_err("Tokenizer::encode_batch", e))?;
        Ok(encs.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Decodes ids to text: stops at the first `</s>` and skips the other special tokens, so a raw
    /// decoder output (`<s> ... </s> <pad> <pad>`) decodes to just the sentence.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let end = ids.iter().position(|&i| i == EOS_ID).unwrap_or(ids.len());
        self.inner.decode(&ids[..end], true).map_err(|e| tk_err("Tokenizer::decode", e))
    }

    /// The token string of an id (for debugging output).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The wrapped Hugging Face tokenizer, for anything this wrapper does not expose.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn metaspace() -> Metaspace {
    // `split: true` cuts words at spaces (BPE never merges across words); `First` prepends `▁` to the
    // sentence only, and the decoder drops it again, which is what makes the round trip exact.
    Metaspace::new('▁', PrependScheme::First, true)
}

/// FNV-1a, 64 bit: tiny, dependency-free and stable across platforms and versions.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: [&str; 6] = [
        "the big dog sees the small cat.",
        "two old men walk near the river.",
        "a child that the teacher likes sleeps.",
        "Zwei Männer stehen am Fluss, und sie lachen!",
        "the cat sleeps under the table near the window.",
        "numbers like twenty-three are written out.",
    ];

    fn trained() -> Tokenizer {
        let texts: Vec<&str> = SAMPLES.iter().copied().cycle().take(60).collect();
        Tokenizer::train(texts, &BpeConfig { vocab_size: 200, min_frequency: 1, limit_alphabet: None }).unwrap()
    }

    #[test]
    fn special_ids_are_fixed() {
        let tok = trained();
        for (id, name) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.token_to_id(name), Some(id as u32));
        }
        assert!(tok.vocab_size() <= 200 && tok.vocab_size() > 4);
    }

    #[test]
    fn round_trip_restores_text() {
        let tok = trained();
        for s in SAMPLES {
            let ids = tok.encode(s).unwrap();
            assert_eq!(*ids.last().unwrap(), EOS_ID);
            assert!(!ids[..ids.len() - 1].contains(&UNK_ID), "{s}: {ids:?}");
            assert_eq!(tok.decode(&ids).unwrap(), s);
        }
        // Decoding a raw decoder output: bos, sentence, eos, padding and garbage after eos.
        let mut ids = vec![BOS_ID];
        ids.extend(tok.encode(SAMPLES[0]).unwrap());
        ids.extend([PAD_ID, PAD_ID, 10, 11]);
        assert_eq!(tok.decode(&ids).unwrap(), SAMPLES[0]);
    }

    #[test]
    fn special_token_text_is_data() {
        let tok = trained();
        let text = "the cat </s> <pad> sleeps.";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids.iter().filter(|&&i| i == EOS_ID).count(), 1);
        assert!(!ids.contains(&PAD_ID));
    }

    #[test]
    fn unseen_characters_become_unk() {
        let tok = trained();
        let ids = tok.encode("the 日 cat").unwrap();
        assert!(ids.contains(&UNK_ID));
    }

    #[test]
    fn save_load_gives_identical_ids_and_hash() {
        let tok = trained();
        let dir = std::env::temp_dir().join(format!("automoe_tok_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        tok.save(&path).unwrap();
        let loaded = Tokenizer::load(&path).unwrap();
        for s in SAMPLES {
            assert_eq!(tok.encode(s).unwrap(), loaded.encode(s).unwrap());
        }
        assert_eq!(tok.hash().unwrap(), loaded.hash().unwrap());
        // Training is deterministic, so the same data gives the same hash; other data another one.
        assert_eq!(trained().hash().unwrap(), tok.hash().unwrap());
        let other = Tokenizer::train(["x y z"; 3], &BpeConfig { vocab_size: 50, min_frequency: 1, limit_alphabet: None }).unwrap();
        assert_ne!(other.hash().unwrap(), tok.hash().unwrap());
        // No temporary file is left next to the saved one.
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_rejects_bad_files() {
        let dir = std::env::temp_dir().join(format!("automoe_tok_bad_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(matches!(Tokenizer::load(&path), Err(Error::Format { .. })));
        assert!(matches!(Tokenizer::load(dir.join("missing.json")), Err(Error::Io { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fnv_is_stable() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn vocabulary_sizes_out_of_range_are_errors() {
        let train = |vocab_size| Tokenizer::train(["a b c"; 3], &BpeConfig { vocab_size, min_frequency: 1, limit_alphabet: None });
        assert!(train(4).unwrap_err().to_string().contains("special tokens"));
        let e = train(usize::MAX / 4).unwrap_err().to_string();
        assert!(e.contains("vocab_size") && e.contains("limit"), "{e}");
        assert!(train(MAX_VOCAB_SIZE).is_ok());
    }

    #[test]
    fn ids_with_gaps_or_shared_ids_are_refused() {
        let json: serde_json::Value = serde_json::from_str(&trained().to_json().unwrap()).unwrap();
        let origin = Path::new("edited/tokenizer.json");
        let load_edited = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut j = json.clone();
            edit(j["model"]["vocab"].as_object_mut().unwrap());
            Tokenizer::from_json_bytes(j.to_string().as_bytes(), origin).map(|_| ()).unwrap_err().to_string()
        };
        let id_of =
            |v: &serde_json::Map<String, serde_json::Value>, id: u64| v.iter().find(|(_, i)| i.as_u64() == Some(id)).unwrap().0.clone();
        let n = json["model"]["vocab"].as_object().unwrap().len() as u64;
        // The last token moved past the end: a gap.
        let msg = load_edited(&|v| {
            let t = id_of(v, n - 1);
            v.insert(t, serde_json::json!(n + 5));
        });
        assert!(msg.contains("edited/tokenizer.json") && msg.contains("without gaps"), "{msg}");
        // A token in the middle given its neighbour's id.
        let msg = load_edited(&|v| {
            let t = id_of(v, 10);
            v.insert(t, serde_json::json!(11));
        });
        assert!(msg.contains("share id 11"), "{msg}");
        // Unedited, it loads.
        Tokenizer::from_json_bytes(json.to_string().as_bytes(), origin).unwrap();
    }
}
