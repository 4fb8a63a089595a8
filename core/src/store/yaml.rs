//! A cheap pre-scan of YAML text, run before `serde_yaml` sees it.
//!
//! The YAML parser takes time quadratic in the nesting depth of flow
//! collections (a 200 KB `[[[[…` took 40 s to refuse), and aliases can
//! expand a small text into a huge value ("billion laughs"). This scan reads
//! the text once, in linear time, tracking block indentation, flow brackets,
//! quoted and block scalars, and refuses:
//!
//! - nesting deeper than [`MAX_DEPTH`] levels (block mappings and sequences,
//!   flow collections, counted together);
//! - more than [`MAX_ALIASES`] aliases in one document;
//! - an alias inside an anchored node (nested aliases are what expands
//!   exponentially);
//! - aliases that would copy more than [`MAX_ALIAS_BYTES`] of text in one
//!   document.
//!
//! Kubernetes objects nest about ten levels deep and rarely use aliases, so
//! these limits refuse only hostile or broken input.

use std::collections::HashMap;

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Aliases (`*name`) accepted in one document.
pub const MAX_ALIASES: usize = 64;
/// Text that aliases may copy in one document, in bytes.
pub const MAX_ALIAS_BYTES: usize = 1024 * 1024;

/// Why a text was refused; `line` and `document` are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlLimit {
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    Depth { document: usize, line: usize },
    #[error("more than {MAX_ALIASES} aliases in one document")]
    Aliases { document: usize, line: usize },
    #[error("alias *{name} inside an anchored node (nested aliases are not accepted)")]
    NestedAlias {
        document: usize,
        line: usize,
        name: String,
    },
    #[error("aliases copy more than 1 MiB of text in one document")]
    AliasBytes { document: usize, line: usize },
}

impl YamlLimit {
    /// The document the limit was hit in.
    pub fn document(&self) -> usize {
        match self {
            YamlLimit::Depth { document, .. }
            | YamlLimit::Aliases { document, .. }
            | YamlLimit::NestedAlias { document, .. }
            | YamlLimit::AliasBytes { document, .. } => *document,
        }
    }

    /// The line the limit was hit on.
    pub fn line(&self) -> usize {
        match self {
            YamlLimit::Depth { line, .. }
            | YamlLimit::Aliases { line, .. }
            | YamlLimit::NestedAlias { line, .. }
            | YamlLimit::AliasBytes { line, .. } => *line,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Seq,
}

/// Where an anchored node ends.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// At the next line indented at most `col` (a `- ` at exactly `col`
    /// continues it when `seq_continues`: a mapping value that is a sequence).
    Block { col: usize, seq_continues: bool },
    /// When the flow depth drops below `depth`, or at a `,` at `depth`.
    Flow { depth: usize },
}

struct Anchor {
    start: usize,
    end: Option<usize>,
}

struct Scan {
    document: usize,
    line: usize,
    block: Vec<(usize, Kind)>,
    flow: usize,
    /// An open quoted scalar spanning lines.
    quote: Option<char>,
    /// Lines indented more than this belong to a block scalar.
    block_scalar: Option<usize>,
    anchors: HashMap<String, Anchor>,
    open: Vec<(String, Close)>,
    aliases: usize,
    alias_bytes: usize,
}

/// Checks `text` against the limits of this module.
pub fn check(text: &str) -> Result<(), YamlLimit> {
    let mut s = Scan {
        document: 1,
        line: 0,
        block: Vec::new(),
        flow: 0,
        quote: None,
        block_scalar: None,
        anchors: HashMap::new(),
        open: Vec::new(),
        aliases: 0,
        alias_bytes: 0,
    };
    let mut offset = 0;
    let mut seen_content = false;
    for raw in text.split_inclusive('\n') {
        s.line += 1;
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        s.scan_line(line, start, &mut seen_content)?;
    }
    Ok(())
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl Scan {
    fn depth_check(&self) -> Result<(), YamlLimit> {
        if self.block.len() + self.flow > MAX_DEPTH {
            return Err(YamlLimit::Depth {
                document: self.document,
                line: self.line,
            });
        }
        Ok(())
    }

    fn new_document(&mut self, start: usize) {
        self.close_all(start);
        self.block.clear();
        self.flow = 0;
        self.quote = None;
        self.block_scalar = None;
        self.anchors.clear();
        self.aliases = 0;
        self.alias_bytes = 0;
    }

    fn close_all(&mut self, at: usize) {
        for (name, _) in self.open.drain(..) {
            if let Some(a) = self.anchors.get_mut(&name) {
                a.end = Some(at);
            }
        }
    }

    fn close_where(&mut self, at: usize, closes: impl Fn(&Close) -> bool) {
        let anchors = &mut self.anchors;
        self.open.retain(|(name, close)| {
            if closes(close) {
                if let Some(a) = anchors.get_mut(name) {
                    a.end = Some(at);
                }
                false
            } else {
                true
            }
        });
    }

    fn anchor(&mut self, name: &str, at: usize, close: Close) {
        self.anchors.insert(
            name.to_string(),
            Anchor {
                start: at,
                end: None,
            },
        );
        self.open.push((name.to_string(), close));
    }

    fn alias(&mut self, name: &str) -> Result<(), YamlLimit> {
        let (document, line) = (self.document, self.line);
        if !self.open.is_empty() {
            return Err(YamlLimit::NestedAlias {
                document,
                line,
                name: name.to_string(),
            });
        }
        self.aliases += 1;
        if self.aliases > MAX_ALIASES {
            return Err(YamlLimit::Aliases { document, line });
        }
        if let Some(Anchor {
            start,
            end: Some(end),
        }) = self.anchors.get(name)
        {
            self.alias_bytes += end - start;
            if self.alias_bytes > MAX_ALIAS_BYTES {
                return Err(YamlLimit::AliasBytes { document, line });
            }
        }
        Ok(())
    }

    fn push(&mut self, col: usize, kind: Kind) -> Result<(), YamlLimit> {
        self.block.push((col, kind));
        self.depth_check()
    }

    /// A mapping key at `col`: the mapping at `col` continues, a sequence at
    /// `col` (a previous key's value) ends.
    fn key_at(&mut self, col: usize) -> Result<(), YamlLimit> {
        while matches!(self.block.last(), Some(&(c, Kind::Seq)) if c == col) {
            self.block.pop();
        }
        match self.block.last() {
            Some(&(c, Kind::Map)) if c == col => Ok(()),
            _ => self.push(col, Kind::Map),
        }
    }

    fn item_at(&mut self, col: usize) -> Result<(), YamlLimit> {
        match self.block.last() {
            Some(&(c, Kind::Seq)) if c == col => Ok(()),
            _ => self.push(col, Kind::Seq),
        }
    }

    fn scan_line(
        &mut self,
        line: &str,
        start: usize,
        seen_content: &mut bool,
    ) -> Result<(), YamlLimit> {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if let Some(threshold) = self.block_scalar {
            if rest.trim().is_empty() || indent > threshold {
                return Ok(());
            }
            self.block_scalar = None;
        }
        if let Some(q) = self.quote {
            match close_quote(line, q) {
                Some(after) => {
                    self.quote = None;
                    return self.after_node(line, after, start);
                }
                None => return Ok(()),
            }
        }
        if self.flow > 0 {
            return self.flow_scan(line, 0, start);
        }
        if rest.is_empty() || rest.starts_with('#') {
            return Ok(());
        }
        if indent == 0 && rest.starts_with('%') {
            return Ok(()); // a directive
        }
        if indent == 0 && (marker(rest, "---") || marker(rest, "...")) {
            if *seen_content || marker(rest, "...") {
                self.document += 1;
            }
            *seen_content = false;
            self.new_document(start);
            let after = rest[3..].trim_start_matches(is_blank);
            if after.is_empty() || after.starts_with('#') {
                return Ok(());
            }
            *seen_content = true;
            let col = line.len() - after.len();
            return self.node(line, col, start, indent);
        }
        *seen_content = true;
        // Anchored block nodes end at a line indented at most as they were.
        let is_item = rest == "-" || rest.starts_with("- ");
        self.close_where(start, |c| match *c {
            Close::Block { col, seq_continues } => {
                indent < col || (indent == col && !(seq_continues && is_item))
            }
            Close::Flow { .. } => false,
        });
        while matches!(self.block.last(), Some(&(c, _)) if c > indent) {
            self.block.pop();
        }
        self.node(line, indent, start, indent)
    }

    /// The node starting at byte `col` of `line` (in block context).
    fn node(
        &mut self,
        line: &str,
        mut col: usize,
        start: usize,
        indent: usize,
    ) -> Result<(), YamlLimit> {
        let mut at = NodeAt {
            col: indent,
            is_value: false,
        };
        loop {
            let rest = &line[col..];
            let trimmed = rest.trim_start_matches(is_blank);
            col += rest.len() - trimmed.len();
            match self.node_token(line, col, start, indent, &mut at)? {
                Some(next) => col = next,
                None => return Ok(()),
            }
        }
    }

    /// The token at byte `col` of `line` (not blank), in a block node:
    /// `Some(column)` where the node goes on, `None` when the line is done.
    fn node_token(
        &mut self,
        line: &str,
        col: usize,
        start: usize,
        indent: usize,
        at: &mut NodeAt,
    ) -> Result<Option<usize>, YamlLimit> {
        let rest = &line[col..];
        let Some(first) = rest.chars().next() else {
            return Ok(None);
        };
        match first {
            '#' => Ok(None),
            '&' | '!' => {
                let end = rest.find(is_blank).unwrap_or(rest.len());
                if first == '&' {
                    self.anchor(
                        &rest[1..end],
                        start + col,
                        Close::Block {
                            col: at.col,
                            seq_continues: at.is_value,
                        },
                    );
                }
                Ok(Some(col + end))
            }
            '*' => {
                let end = rest
                    .find(|c: char| is_blank(c) || ",[]{}".contains(c))
                    .unwrap_or(rest.len());
                self.alias(&rest[1..end])?;
                Ok(None)
            }
            '-' | '?' if rest.len() == 1 || rest[1..].starts_with(is_blank) => {
                if first == '-' {
                    self.item_at(col)?;
                } else {
                    self.key_at(col)?;
                    self.push(col, Kind::Map)?;
                }
                *at = NodeAt {
                    col,
                    is_value: false,
                };
                Ok(Some(col + 1))
            }
            '[' | '{' => self.flow_scan(line, col, start).map(|()| None),
            '|' | '>' => {
                self.block_scalar = Some(indent);
                Ok(None)
            }
            '"' | '\'' => self.quoted_node(line, col, first, at),
            _ => match key_colon(rest) {
                Some(colon) => {
                    self.key_at(col)?;
                    *at = NodeAt {
                        col,
                        is_value: true,
                    };
                    Ok(Some(col + colon + 1))
                }
                None => Ok(None), // a plain scalar
            },
        }
    }

    /// A quoted scalar opening (`quote`) at byte `col` of `line`: a key when
    /// a `:` follows it, else the line is done (or the scalar goes on to the
    /// next line). As [`Self::node_token`].
    fn quoted_node(
        &mut self,
        line: &str,
        col: usize,
        quote: char,
        at: &mut NodeAt,
    ) -> Result<Option<usize>, YamlLimit> {
        let Some(after) = close_quote(&line[col + 1..], quote) else {
            self.quote = Some(quote);
            return Ok(None);
        };
        let after = col + 1 + after;
        if key_colon(&line[after..]) != Some(0) {
            return Ok(None);
        }
        self.key_at(col)?;
        *at = NodeAt {
            col,
            is_value: true,
        };
        Ok(Some(after + 1))
    }

    /// What follows a quoted scalar that ended at byte `at` of `line`.
    fn after_node(&mut self, line: &str, at: usize, start: usize) -> Result<(), YamlLimit> {
        if self.flow > 0 {
            return self.flow_scan(line, at, start);
        }
        Ok(())
    }

    /// Flow context from byte `col` of `line` to its end.
    fn flow_scan(&mut self, line: &str, col: usize, start: usize) -> Result<(), YamlLimit> {
        let bytes = line.as_bytes();
        let mut i = col;
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b'[' | b'{' => {
                    self.flow += 1;
                    self.depth_check()?;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    let depth = self.flow;
                    self.close_where(
                        start + i,
                        |c| matches!(*c, Close::Flow { depth: d } if d > depth),
                    );
                    if self.flow == 0 {
                        return Ok(());
                    }
                }
                b',' => {
                    let depth = self.flow;
                    self.close_where(
                        start + i,
                        |c| matches!(*c, Close::Flow { depth: d } if d >= depth),
                    );
                }
                b'#' if i == 0 || is_blank(bytes[i - 1] as char) => return Ok(()),
                b'"' | b'\'' => match close_quote(&line[i + 1..], c as char) {
                    Some(after) => i += after,
                    None => {
                        self.quote = Some(c as char);
                        return Ok(());
                    }
                },
                b'&' | b'*' => {
                    let rest = &line[i + 1..];
                    let end = rest
                        .find(|c: char| is_blank(c) || ",[]{}".contains(c))
                        .unwrap_or(rest.len());
                    let name = &rest[..end];
                    if c == b'&' {
                        self.anchor(name, start + i, Close::Flow { depth: self.flow });
                    } else {
                        self.alias(name)?;
                    }
                    // On to the delimiter after the name, which counts.
                    i += 1 + end;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }
}

/// Whether `rest` is the document marker `m` (followed by nothing or a blank).
fn marker(rest: &str, m: &str) -> bool {
    rest.starts_with(m) && rest[m.len()..].chars().next().is_none_or(is_blank)
}

/// The byte just after the closing quote `q` in `s` (which starts after the
/// opening one), or None when the scalar goes on past this line.
fn close_quote(s: &str, q: char) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if q == '"' && c == b'\\' {
            i += 2;
            continue;
        }
        if c == q as u8 {
            if q == '\'' && bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// The byte of a plain mapping key's `:` in `s` (a `:` followed by a blank
/// or the end), unless a comment starts first.
fn key_colon(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'#' if i > 0 && is_blank(bytes[i - 1] as char) => return None,
            b':' if bytes.get(i + 1).is_none_or(|&n| is_blank(n as char)) => return Some(i),
            _ => {}
        }
    }
    None
}

/// Where the scan of a block node stands: the column of the node that
/// properties (anchors) apply to, and whether it is a mapping value (which a
/// `- ` at its key's column continues).
struct NodeAt {
    col: usize,
    is_value: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_block(depth: usize) -> String {
        let mut s = String::new();
        for i in 0..depth {
            s.push_str(&" ".repeat(i * 2));
            s.push_str("a:\n");
        }
        s
    }

    #[test]
    fn ordinary_manifests_pass() {
        for file in [
            "backupconfiguration.yaml",
            "backupsession.yaml",
            "deployment.yaml",
            "repository.yaml",
        ] {
            let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .join("manifests/examples")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(check(&text), Ok(()), "{file}");
        }
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let mut files = vec![
            root.join("manifests/install.yaml"),
            root.join("manifests/crds/crds.yaml"),
        ];
        let mut dirs = vec![root.join("tests/fixtures")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p
                    .extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                {
                    files.push(p);
                }
            }
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert_eq!(check(&text), Ok(()), "{}", file.display());
        }
        let tricky = "a: \"x: [[[[\"\nb: 'it''s [[['\nc: |\n  [[[[[[[[[\n  {{{{{{\nd: x[[[[[ # [[[[\ne: [1, [2, {f: 3}]]\n";
        assert_eq!(check(tricky), Ok(()));
        let merge = "base: &b {x: 1}\none:\n  <<: *b\ntwo:\n  <<: *b\n";
        assert_eq!(check(merge), Ok(()));
    }

    #[test]
    fn depth_is_counted_in_block_and_flow_and_compact_sequences() {
        assert_eq!(check(&nested_block(MAX_DEPTH)), Ok(()));
        assert!(matches!(
            check(&nested_block(MAX_DEPTH + 1)),
            Err(YamlLimit::Depth { line: 65, .. })
        ));
        let flow = format!("a: {}{}\n", "[".repeat(64), "]".repeat(64));
        assert!(matches!(
            check(&flow),
            Err(YamlLimit::Depth { line: 1, .. })
        ));
        let flow_ok = format!("{}{}\n", "[".repeat(64), "]".repeat(64));
        assert_eq!(check(&flow_ok), Ok(()));
        let compact = format!("{}x\n", "- ".repeat(65));
        assert!(matches!(check(&compact), Err(YamlLimit::Depth { .. })));
        // A sequence as a mapping value at its key's column, many levels deep.
        let mut s = String::new();
        for i in 0..40 {
            s.push_str(&" ".repeat(i * 2));
            s.push_str("- a:\n");
        }
        assert!(matches!(check(&s), Err(YamlLimit::Depth { .. })));
        // Multi-line flow counts across lines.
        let lines = "[\n".repeat(70);
        assert!(matches!(
            check(&lines),
            Err(YamlLimit::Depth { line: 65, .. })
        ));
    }

    #[test]
    fn a_huge_deep_flow_is_refused_at_once() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        assert!(check(&text).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut s = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in 'b'..='i' {
            s.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
            prev = name;
        }
        assert!(matches!(
            check(&s),
            Err(YamlLimit::NestedAlias { line: 2, .. })
        ));
        // Block style nesting too.
        let block = "a: &a\n  - x\nb: &b\n  - *a\n";
        assert!(matches!(
            check(block),
            Err(YamlLimit::NestedAlias { line: 4, .. })
        ));
        // Many aliases of one anchor.
        let many = format!("a: &a x\nb: [{}]\n", vec!["*a"; 65].join(","));
        assert!(matches!(check(&many), Err(YamlLimit::Aliases { .. })));
        // Aliases copying a big node.
        let big = format!(
            "a: &a [{}]\nb: [{}]\n",
            vec!["\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\""; 20_000].join(","),
            vec!["*a"; 60].join(",")
        );
        assert!(matches!(check(&big), Err(YamlLimit::AliasBytes { .. })));
    }

    #[test]
    fn documents_are_counted_and_reset() {
        let text = format!("a: 1\n---\n{}", nested_block(65));
        let e = check(&text).unwrap_err();
        assert_eq!((e.document(), e.line()), (2, 67));
        let aliases = format!("a: &a x\nb: [{}]\n", vec!["*a"; 40].join(","));
        assert_eq!(check(&format!("{aliases}---\n{aliases}")), Ok(()));
    }
}
