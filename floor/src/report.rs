//! Errors for people: one line, every cause once.
//!
//! Library errors keep their sources (`#[source]`), and many also spell the
//! source in their own message, so walking the chain naively prints a cause
//! twice (`n.toml: No such file (os error 2): No such file (os error 2)`).
//! [`one_line`] prints each cause that is not already part of what came
//! before it.

use std::error::Error;

/// Joins an error chain (outermost first) into `a: b: c`, leaving out each
/// cause whose text the line already holds, and of a cause that is itself
/// `x: y`, each part the line already holds (`file is not a database`
/// followed by `Error code 26: file is not a database` adds `Error code 26`).
pub fn one_line<'a, I>(chain: I) -> String
where
    I: IntoIterator<Item = &'a (dyn Error + 'static)>,
{
    let mut line = String::new();
    for cause in chain {
        // Multi-line messages (TOML's, with a source snippet) become one line.
        let text = cause
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let text = text.as_str();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        let new: Vec<&str> = text
            .split(": ")
            .map(str::trim)
            .filter(|part| !part.is_empty() && !line.contains(part))
            .collect();
        if new.is_empty() {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&new.join(": "));
    }
    line
}

/// [`one_line`] for an error and its `source()` chain.
pub fn error_line(error: &(dyn Error + 'static)) -> String {
    one_line(std::iter::successors(
        Some(error),
        |e: &&(dyn Error + 'static)| (*e).source(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer {
        text: String,
        source: Option<Box<dyn Error + 'static>>,
    }

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref()
        }
    }

    fn chain(texts: &[&str]) -> Layer {
        let (first, rest) = texts.split_first().expect("at least one layer");
        Layer {
            text: first.to_string(),
            source: (!rest.is_empty()).then(|| Box::new(chain(rest)) as Box<dyn Error>),
        }
    }

    #[test]
    fn causes_already_spelled_are_not_repeated() {
        let e = chain(&[
            "nospec.toml: No such file or directory (os error 2)",
            "No such file or directory (os error 2)",
        ]);
        assert_eq!(
            error_line(&e),
            "nospec.toml: No such file or directory (os error 2)"
        );
        let e = chain(&[
            "n.toml:2:6: node.id: invalid type",
            "n.toml:2:6: node.id: invalid type",
        ]);
        assert_eq!(error_line(&e), "n.toml:2:6: node.id: invalid type");
    }

    #[test]
    fn parts_of_a_cause_already_said_are_left_out() {
        let e = chain(&[
            "opening srv/registry.db",
            "file is not a database",
            "Error code 26: file is not a database",
        ]);
        assert_eq!(
            error_line(&e),
            "opening srv/registry.db: file is not a database: Error code 26"
        );
    }

    #[test]
    fn distinct_causes_are_joined_in_order() {
        let e = chain(&[
            "building the CD",
            "writing out.iso",
            "No space left on device",
        ]);
        assert_eq!(
            error_line(&e),
            "building the CD: writing out.iso: No space left on device"
        );
    }
}
