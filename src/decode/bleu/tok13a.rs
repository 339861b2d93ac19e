//! The `13a` tokenizer (mteval-v13a, as sacreBLEU 2.6.0's `Tokenizer13a` + `TokenizerRegexp`).
//!
//! sacreBLEU applies four Python regexes with `re.sub`. Each pattern matches a fixed number of
//! code points (one or two), so a left-to-right scan that emits a replacement and skips past the
//! match is exactly Python's leftmost, non-overlapping substitution; no regex engine is needed.

/// Python's `str.isspace()`: what `str.split()` and `str.rstrip()` (no arguments) treat as
/// whitespace. It is Rust's `char::is_whitespace` plus the ASCII information separators
/// U+001C..=U+001F, which Python counts as whitespace and Rust does not. Getting this wrong would
/// split (or fail to split) tokens differently from sacreBLEU on unusual input.
pub(crate) fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `' '.join(s.split())`: tokens separated by single spaces, no leading/trailing space.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_whitespace).filter(|t| !t.is_empty())
}

/// The character class `[\{-\~\[-\` -\&\(-\+\:-\@\/]` of the first mteval regex: ASCII symbols
/// other than `'`, `,`, `-` and `.` (those get context-dependent rules below), plus space.
fn is_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// One `re.sub` of a two-code-point pattern `(A)(B)`: wherever `matches(a, b)` holds at the scan
/// position, `emit` writes the replacement and the scan resumes after `b`.
fn sub_pairs(s: &[char], matches: impl Fn(char, char) -> bool, emit: impl Fn(char, char, &mut Vec<char>)) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 2);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && matches(s[i], s[i + 1]) {
            emit(s[i], s[i + 1], &mut out);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Tokenizes one segment exactly as sacreBLEU's `13a` tokenizer does (the caller is expected to
/// have applied `rstrip()` first, as sacreBLEU's BLEU does before tokenizing).
/// Returns the tokens joined by single spaces.
pub fn tokenize_13a(line: &str) -> String {
    // Language-independent part of mteval-v13a.
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    // sacreBLEU pads with one space on each side before the regexes; it matters for rules that
    // look at a neighbour of the first/last character (e.g. a leading "." becomes " . ").
    let padded: Vec<char> = format!(" {line} ").chars().collect();

    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> " \1 "
    let mut s = Vec::with_capacity(padded.len() * 2);
    for c in padded {
        if is_symbol(c) {
            s.extend([' ', c, ' ']);
        } else {
            s.push(c);
        }
    }
    // Python's [0-9] is the ASCII digits only, hence is_ascii_digit rather than is_numeric.
    let is_sep = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> "\1 \2 ": period/comma not preceded by a digit.
    let s = sub_pairs(&s, |a, b| !a.is_ascii_digit() && is_sep(b), |a, b, o| o.extend([a, ' ', b, ' ']));
    // ([\.,])([^0-9]) -> " \1 \2": period/comma not followed by a digit.
    let s = sub_pairs(&s, |a, b| is_sep(a) && !b.is_ascii_digit(), |a, b, o| o.extend([' ', a, ' ', b]));
    // ([0-9])(-) -> "\1 \2 ": dash preceded by a digit.
    let s = sub_pairs(&s, |a, b| a.is_ascii_digit() && b == '-', |a, b, o| o.extend([a, ' ', b, ' ']));

    let s: String = s.into_iter().collect();
    py_split(&s).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::tokenize_13a as tok;

    // Expected strings were produced with sacreBLEU 2.6.0's `Tokenizer13a()`.
    #[test]
    fn punctuation() {
        assert_eq!(tok("Hello, world!"), "Hello , world !");
        assert_eq!(tok("(a) [b] {c} \"d\" e?"), "( a ) [ b ] { c } \" d \" e ?");
        assert_eq!(tok("it's a cat's toy."), "it's a cat's toy .");
        assert_eq!(
            tok("a/b:c;d@e#f$g%h&i*j+k=l<m>n^o_p`q|r~s"),
            "a / b : c ; d @ e # f $ g % h & i * j + k = l < m > n ^ o _ p ` q | r ~ s"
        );
    }

    #[test]
    fn numbers_with_commas_and_periods() {
        assert_eq!(tok("It costs 1,000.50 dollars."), "It costs 1,000.50 dollars .");
        assert_eq!(tok("pi is 3.14, e is 2.71."), "pi is 3.14 , e is 2.71 .");
        assert_eq!(tok("version .5 and 5. and a.b"), "version . 5 and 5 . and a . b");
        assert_eq!(tok("Wait... 1..2"), "Wait . . . 1 . . 2");
    }

    #[test]
    fn dashes() {
        assert_eq!(tok("well-known 1990-2000 a - b 5-"), "well-known 1990 - 2000 a - b 5 -");
        assert_eq!(tok("x-5 --"), "x-5 --");
    }

    #[test]
    fn entities_skipped_and_newlines() {
        assert_eq!(tok("He said &quot;hi&quot; &amp; left &lt;b&gt;"), "He said \" hi \" & left < b >");
        assert_eq!(tok("a <skipped> b"), "a b");
        assert_eq!(tok("line-\nbreak\nhere"), "linebreak here");
        assert_eq!(tok("&amp;quot;"), "& quot ;");
    }

    #[test]
    fn whitespace_and_empty() {
        assert_eq!(tok(""), "");
        assert_eq!(tok("  a \t b\u{3000}c\u{1f}d  "), "a b c d");
    }
}
