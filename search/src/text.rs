//! The text a viewer types, parsed the way web search engines read it:
//! words are all required, `"quoted words"` must appear together,
//! `-word` excludes, `or` between two terms offers alternatives, and the
//! last word, while it is still being typed, also matches longer words
//! (`guit` finds "guitar").
//!
//! Only letters and digits ever reach a query language: everything else
//! (`'`, `&`, `!`, `:*`, `\`, `(`…) separates words, so no input can
//! inject tsquery, SQL or Elasticsearch syntax. The parsed query renders
//! to PostgreSQL's `to_tsquery` syntax ([`TextQuery::to_tsquery`]) and to
//! Elasticsearch's query DSL (`elastic/body.rs`).

use std::fmt::Write as _;

/// Most characters a query may have.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most words a query may have (each costs an index lookup).
pub const MAX_WORDS: usize = 16;
/// A last word shorter than this is matched whole, not as a prefix: a
/// prefix of one or two letters would match a large share of every
/// word in the index.
pub const MIN_PREFIX_CHARS: usize = 3;

/// A term: words that must all appear, or appear in order (a phrase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Lower-cased words, letters and digits only, never empty.
    pub words: Vec<String>,
    /// `"quoted"`: the words must appear next to each other, in order.
    pub phrase: bool,
    /// `-excluded`: documents holding the term are left out.
    pub negated: bool,
    /// The last word is still being typed: it also matches longer words.
    pub prefix: bool,
    /// Typo corrections: empty, or for each word the known words it may
    /// have meant (any of them matches; none: the word as typed).
    pub alternatives: Vec<Vec<String>>,
}

/// A parsed query: any of the groups matches, a group matches when all
/// its terms do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextQuery {
    /// Alternatives (`or`); each holds at least one term that is not
    /// negated.
    pub groups: Vec<Vec<Term>>,
}

/// Why a query cannot be searched (each is a 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing but spaces.
    #[error("the query is empty")]
    Empty,
    /// Over [`MAX_QUERY_CHARS`].
    #[error("the query is longer than {MAX_QUERY_CHARS} characters")]
    TooLong,
    /// Over [`MAX_WORDS`].
    #[error("the query has more than {MAX_WORDS} words")]
    TooManyWords,
    /// Only punctuation or operators.
    #[error("the query has no words to search for (only letters and digits are searched)")]
    NoWords,
    /// An alternative made only of excluded words would match nearly
    /// everything.
    #[error("every alternative of the query needs a word to look for, not only -excluded ones")]
    OnlyExcluded,
    /// A control character (NUL, escape…).
    #[error("the query contains control characters")]
    Control,
}

#[derive(Debug)]
enum Token {
    Term(Term),
    Or,
}

/// The letters-and-digits runs of `s`, lower-cased.
fn words_of(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl TextQuery {
    /// Parses what a viewer typed.
    pub fn parse(input: &str) -> Result<TextQuery, TextError> {
        if input.chars().count() > MAX_QUERY_CHARS {
            return Err(TextError::TooLong);
        }
        if input.chars().any(char::is_control) {
            return Err(TextError::Control);
        }
        if input.trim().is_empty() {
            return Err(TextError::Empty);
        }
        let tokens = tokenize(input);
        let mut groups: Vec<Vec<Term>> = vec![Vec::new()];
        let mut n_words = 0;
        for (i, t) in tokens.iter().enumerate() {
            match t {
                // `or` between two terms starts an alternative; elsewhere
                // (first, last, doubled) it is only a word nobody needs.
                Token::Or => {
                    let after = matches!(tokens.get(i + 1), Some(Token::Term(_)));
                    if groups.last().is_some_and(|g| !g.is_empty()) && after {
                        groups.push(Vec::new());
                    }
                }
                Token::Term(term) => {
                    n_words += term.words.len();
                    if let Some(g) = groups.last_mut() {
                        g.push(term.clone());
                    }
                }
            }
        }
        groups.retain(|g| !g.is_empty());
        if groups.is_empty() {
            return Err(TextError::NoWords);
        }
        if n_words > MAX_WORDS {
            return Err(TextError::TooManyWords);
        }
        if groups.iter().any(|g| g.iter().all(|t| t.negated)) {
            return Err(TextError::OnlyExcluded);
        }
        // The last word is being typed unless a space or a closing quote
        // ended it.
        let typing = !input.ends_with(|c: char| c.is_whitespace() || c == '"');
        if typing {
            if let Some(last) = groups.last_mut().and_then(|g| g.last_mut()) {
                let long_enough = last
                    .words
                    .last()
                    .is_some_and(|w| w.chars().count() >= MIN_PREFIX_CHARS);
                if !last.phrase && !last.negated && long_enough {
                    last.prefix = true;
                }
            }
        }
        Ok(TextQuery { groups })
    }

    /// The query in `to_tsquery` syntax. Every operand is a quoted run of
    /// letters and digits, so the text cannot hold operators of its own;
    /// `to_tsquery('vodfarm', …)` then stems and folds each word as the
    /// documents were.
    pub fn to_tsquery(&self) -> String {
        self.render(false)
    }

    /// Like [`TextQuery::to_tsquery`], but every word must be in a title
    /// (weight A): what as-you-type suggestions match.
    pub fn to_title_tsquery(&self) -> String {
        self.render(true)
    }

    /// Like [`TextQuery::to_tsquery`] with every phrase's words merely
    /// required, not next to each other: matches a superset of the
    /// query's documents, and the GIN index answers it without reading
    /// positions.
    pub fn to_loose_tsquery(&self) -> String {
        let mut q = self.clone();
        for t in q.groups.iter_mut().flatten() {
            t.phrase = false;
        }
        q.render(false)
    }

    /// The words each alternative (`or`) requires, by slot: a slot is a
    /// word that must appear, as the words any of which will do (the
    /// word, or its typo corrections; a prefix being typed ends in `*`).
    /// Excluded terms require nothing. For estimating how many documents
    /// can match: at most as many as hold the rarest slot of an
    /// alternative.
    pub fn required_words(&self) -> Vec<Vec<Vec<String>>> {
        self.groups
            .iter()
            .map(|group| {
                let mut slots = Vec::new();
                for t in group.iter().filter(|t| !t.negated) {
                    for (i, w) in t.words.iter().enumerate() {
                        if t.prefix && i + 1 == t.words.len() {
                            slots.push(vec![format!("{w}*")]);
                            continue;
                        }
                        match t.alternatives.get(i).filter(|a| !a.is_empty()) {
                            Some(alts) => slots.push(alts.clone()),
                            None => slots.push(vec![w.clone()]),
                        }
                    }
                }
                slots
            })
            .collect()
    }

    fn render(&self, title_only: bool) -> String {
        let weight = if title_only { "A" } else { "" };
        let mut out = String::new();
        for (gi, group) in self.groups.iter().enumerate() {
            if gi > 0 {
                out.push_str(" | ");
            }
            out.push('(');
            for (ti, term) in group.iter().enumerate() {
                if ti > 0 {
                    out.push_str(" & ");
                }
                if term.negated {
                    out.push('!');
                }
                out.push('(');
                let joiner = if term.phrase { " <-> " } else { " & " };
                for (wi, w) in term.words.iter().enumerate() {
                    if wi > 0 {
                        out.push_str(joiner);
                    }
                    let star = if term.prefix && wi + 1 == term.words.len() {
                        "*"
                    } else {
                        ""
                    };
                    let marks = format!("{star}{weight}");
                    let marks = if marks.is_empty() {
                        marks
                    } else {
                        format!(":{marks}")
                    };
                    // Words are letters and digits only: no quote to escape.
                    match term.alternatives.get(wi).filter(|a| !a.is_empty()) {
                        Some(alts) => {
                            out.push('(');
                            for (ai, a) in alts.iter().enumerate() {
                                if ai > 0 {
                                    out.push_str(" | ");
                                }
                                let _ = write!(out, "'{a}'{marks}");
                            }
                            out.push(')');
                        }
                        None => {
                            let _ = write!(out, "'{w}'{marks}");
                        }
                    }
                }
                out.push(')');
            }
            out.push(')');
        }
        out
    }

    /// The words a typo could hide in: every word looked for (not
    /// excluded, not the prefix being typed), once each.
    pub fn correctable_words(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self.groups.iter().flatten().filter(|t| !t.negated) {
            for (i, w) in t.words.iter().enumerate() {
                let typing = t.prefix && i + 1 == t.words.len();
                if !typing && !out.contains(w) {
                    out.push(w.clone());
                }
            }
        }
        out
    }

    /// The query with each correctable word replaced by the known words
    /// it may have meant (`corrections`: word → candidates); `None` when
    /// that changes nothing.
    pub fn corrected(
        &self,
        corrections: &std::collections::HashMap<String, Vec<String>>,
    ) -> Option<TextQuery> {
        let mut changed = false;
        let mut q = self.clone();
        for t in q.groups.iter_mut().flatten().filter(|t| !t.negated) {
            let last = t.words.len().saturating_sub(1);
            t.alternatives = t
                .words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    if t.prefix && i == last {
                        return Vec::new();
                    }
                    match corrections.get(w) {
                        Some(c) if !c.is_empty() => {
                            if c.len() != 1 || &c[0] != w {
                                changed = true;
                            }
                            c.clone()
                        }
                        _ => Vec::new(),
                    }
                })
                .collect();
        }
        changed.then_some(q)
    }

    /// The query without the word being typed: `None` when no word is a
    /// prefix, or when its alternative would then require no word (a
    /// query that matches at least every document the query matches).
    pub fn without_prefix(&self) -> Option<TextQuery> {
        if !self.has_prefix() {
            return None;
        }
        let mut q = self.clone();
        for group in &mut q.groups {
            for t in group.iter_mut().filter(|t| t.prefix) {
                t.words.pop();
                t.alternatives.truncate(t.words.len());
                t.prefix = false;
            }
            group.retain(|t| !t.words.is_empty());
            if group.iter().all(|t| t.negated) {
                return None;
            }
        }
        Some(q)
    }

    /// Whether some term is a quoted phrase.
    pub fn has_phrase(&self) -> bool {
        self.groups.iter().flatten().any(|t| t.phrase)
    }

    /// Whether the last word is matched as a prefix.
    pub fn has_prefix(&self) -> bool {
        self.groups.iter().flatten().any(|t| t.prefix)
    }

    /// A canonical spelling (for cursors: a page continues only the
    /// search that made it).
    pub fn canonical(&self) -> String {
        self.to_tsquery()
    }
}

fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut rest = input;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let mut negated = false;
        if let Some(r) = rest.strip_prefix('-') {
            // `-` directly before a word or quote excludes it.
            if r.starts_with(|c: char| !c.is_whitespace()) {
                negated = true;
                rest = r;
            }
        }
        if let Some(r) = rest.strip_prefix('"') {
            let (inside, after) = match r.find('"') {
                Some(end) => (&r[..end], &r[end + 1..]),
                None => (r, ""),
            };
            rest = after;
            let words = words_of(inside);
            if !words.is_empty() {
                tokens.push(Token::Term(Term {
                    phrase: words.len() > 1,
                    words,
                    negated,
                    prefix: false,
                    alternatives: Vec::new(),
                }));
            }
            continue;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        let chunk = &rest[..end];
        rest = &rest[end..];
        if !negated && chunk.eq_ignore_ascii_case("or") {
            tokens.push(Token::Or);
            continue;
        }
        let words = words_of(chunk);
        if !words.is_empty() {
            tokens.push(Token::Term(Term {
                words,
                phrase: false,
                negated,
                prefix: false,
                alternatives: Vec::new(),
            }));
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(q: &str) -> String {
        TextQuery::parse(q).expect(q).to_tsquery()
    }

    #[test]
    fn words_are_required_and_the_last_one_is_a_prefix() {
        assert_eq!(ts("red guitar"), "(('red') & ('guitar':*))");
        assert_eq!(ts("red guitar "), "(('red') & ('guitar'))");
        // Too short to expand.
        assert_eq!(ts("red gu"), "(('red') & ('gu'))");
    }

    #[test]
    fn required_words_by_alternative() {
        let q = TextQuery::parse("\"red guitar\" -drums or cats ").expect("q");
        assert_eq!(
            q.required_words(),
            [
                vec![vec!["red".to_owned()], vec!["guitar".to_owned()]],
                vec![vec!["cats".to_owned()]]
            ]
        );
        assert_eq!(
            q.to_loose_tsquery(),
            "(('red' & 'guitar') & !('drums')) | (('cats'))"
        );
        assert!(!q.has_prefix());
        assert_eq!(q.without_prefix(), None, "no word being typed");
    }

    #[test]
    fn the_query_without_the_word_being_typed() {
        let q = TextQuery::parse("cats or red guit").expect("q");
        assert_eq!(
            q.without_prefix().map(|d| d.to_tsquery()).as_deref(),
            Some("(('cats')) | (('red'))")
        );
        // rock&roll: one term of two words; only the typed one goes.
        let q = TextQuery::parse("rock&roll").expect("q");
        assert_eq!(
            q.without_prefix().map(|d| d.to_tsquery()).as_deref(),
            Some("(('rock'))")
        );
        // Nothing would be left to look for.
        for alone in ["guit", "cats or guit", "-drums guit"] {
            let q = TextQuery::parse(alone).expect(alone);
            assert!(q.has_prefix(), "{alone}");
            assert_eq!(q.without_prefix(), None, "{alone}");
        }
    }

    #[test]
    fn quotes_or_and_exclusion() {
        assert_eq!(
            ts("\"red guitar\" -drums"),
            "(('red' <-> 'guitar') & !('drums'))"
        );
        assert_eq!(ts("cats or dogs "), "(('cats')) | (('dogs'))");
        assert_eq!(ts("cats OR dogs "), "(('cats')) | (('dogs'))");
        assert_eq!(ts("a b or c d "), "(('a') & ('b')) | (('c') & ('d'))");
        // `or` without two sides is a word nobody needs.
        assert_eq!(ts("or cats "), "(('cats'))");
        assert_eq!(ts("cats or "), "(('cats'))");
        // An unclosed quote runs to the end.
        assert_eq!(ts("\"red guit"), "(('red' <-> 'guit'))");
        // A one-word phrase is a word.
        assert_eq!(ts("\"red\""), "(('red'))");
        // A lone dash is nothing.
        assert_eq!(ts("cats - dogs "), "(('cats') & ('dogs'))");
    }

    #[test]
    fn operators_and_quotes_of_query_languages_are_separators() {
        assert_eq!(ts("it's"), "(('it' & 's'))");
        assert_eq!(ts("a&b|c"), "(('a' & 'b' & 'c'))");
        assert_eq!(ts("rock&roll"), "(('rock' & 'roll':*))");
        assert_eq!(ts("!cats "), "(('cats'))");
        assert_eq!(ts("cat:* "), "(('cat'))");
        assert_eq!(ts("x\\y' OR 1=1 --"), "(('x' & 'y')) | (('1' & '1'))");
        assert_eq!(ts("Crème BRÛLÉE"), "(('crème') & ('brûlée':*))");
        for bad in ["'", "&", "!", ":*", "\\", "()", "''", "--", "\"\""] {
            assert_eq!(TextQuery::parse(bad), Err(TextError::NoWords), "{bad}");
        }
    }

    #[test]
    fn bad_queries() {
        assert_eq!(TextQuery::parse(""), Err(TextError::Empty));
        assert_eq!(TextQuery::parse("   "), Err(TextError::Empty));
        assert_eq!(
            TextQuery::parse(&"a".repeat(MAX_QUERY_CHARS + 1)),
            Err(TextError::TooLong)
        );
        assert!(TextQuery::parse(&"a".repeat(MAX_QUERY_CHARS)).is_ok());
        assert_eq!(
            TextQuery::parse(&"w ".repeat(MAX_WORDS + 1)),
            Err(TextError::TooManyWords)
        );
        assert_eq!(TextQuery::parse("-cats"), Err(TextError::OnlyExcluded));
        assert_eq!(
            TextQuery::parse("dogs or -cats"),
            Err(TextError::OnlyExcluded)
        );
        assert_eq!(TextQuery::parse("a\0b"), Err(TextError::Control));
    }

    #[test]
    fn title_query_and_typo_corrections() {
        let q = TextQuery::parse("vodfarm dem").expect("q");
        assert_eq!(q.to_title_tsquery(), "(('vodfarm':A) & ('dem':*A))");
        let q = TextQuery::parse("gutar -drums \"red gutar\" lesso").expect("q");
        // Excluded words and the word being typed are not corrected.
        assert_eq!(q.correctable_words(), ["gutar", "red"]);
        let mut c = std::collections::HashMap::new();
        c.insert(
            "gutar".to_owned(),
            vec!["guitar".to_owned(), "guitars".to_owned()],
        );
        c.insert("red".to_owned(), vec!["red".to_owned()]);
        let fixed = q.corrected(&c).expect("a correction");
        assert_eq!(
            fixed.to_tsquery(),
            "((('guitar' | 'guitars')) & !('drums') & (('red') <-> ('guitar' | 'guitars')) & ('lesso':*))"
        );
        assert_eq!(
            fixed.to_loose_tsquery(),
            "((('guitar' | 'guitars')) & !('drums') & (('red') & ('guitar' | 'guitars')) & ('lesso':*))"
        );
        assert_eq!(
            fixed.required_words(),
            [vec![
                vec!["guitar".to_owned(), "guitars".to_owned()],
                vec!["red".to_owned()],
                vec!["guitar".to_owned(), "guitars".to_owned()],
                vec!["lesso*".to_owned()],
            ]]
        );
        assert!(fixed.has_prefix() && fixed.has_phrase());
        let driver = fixed.without_prefix().expect("words besides the prefix");
        assert_eq!(
            driver.to_loose_tsquery(),
            "((('guitar' | 'guitars')) & !('drums') & (('red') & ('guitar' | 'guitars')))"
        );
        assert!(!driver.has_prefix());
        c.remove("gutar");
        assert_eq!(q.corrected(&c), None, "nothing changed");
    }
}
