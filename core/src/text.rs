//! Text for people: one error message on one line.

/// Folds an error message onto one line: every run of whitespace, newlines
/// included, becomes one space.
///
/// Not the same as `stash::backup::restic::one_line`, which joins restic's trimmed
/// stderr lines (keeping the spacing inside a line) and names an empty
/// stderr; each keeps its output byte for byte, so they stay two functions.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
