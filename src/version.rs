//! Version numbers in the forms the vendors print, compared as numbers.
//!
//! Forms met in the products' output: `v2.0.10` and `V3.00.1` (a letter before the numbers),
//! `2.00.7.4 2022.12.08` (DolphinDB's `version()`: the date after a space), `openmldb version
//! 0.9.2-1a2b3c4` (a commit after a dash), `4.2.1.8_108000022024072217` (OceanBase's build after
//! an underscore), `4.2.1.2-ce` (an edition), `2.0.10-rc1` (a pre-release, older than `2.0.10`).
//! Numbers compare as numbers (`0.10` is newer than `0.9`, `2.00.8` equals `2.0.8.0`).

use std::cmp::Ordering;

/// A parsed version: its numbers and, for a pre-release, the tag (`rc1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub numbers: Vec<u64>,
    pub pre: Option<String>,
}

/// Tags after a dash that mark a pre-release; any other suffix (an edition, a commit) is not
/// part of the version's order.
const PRE_TAGS: &[&str] = &["rc", "alpha", "beta", "pre", "dev", "snapshot", "preview"];

/// Reads the first version in `text`: the first word that starts with a digit (or `v`/`V` and a
/// digit). An error says what was expected.
pub fn parse(text: &str) -> Result<Version, String> {
    let word = text
        .split_whitespace()
        .map(|w| w.strip_prefix(['v', 'V']).unwrap_or(w))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(|| format!("no version number in `{}`", text.trim()))?;
    // The build (OceanBase's `_1080...`, semver's `+meta`) is not part of the order.
    let word = word.split(['_', '+']).next().unwrap_or(word);
    let (nums, suffix) = match word.split_once('-') {
        Some((n, s)) => (n, Some(s)),
        None => (word, None),
    };
    let numbers = nums
        .split('.')
        .map(|p| {
            if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
                Err(format!("`{word}` is not a version: `{p}` is not a number"))
            } else {
                p.parse::<u64>()
                    .map_err(|_| format!("`{word}`: `{p}` is too large"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = suffix.map(str::to_ascii_lowercase).filter(|s| {
        PRE_TAGS.iter().any(|t| {
            s.strip_prefix(t).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            })
        })
    });
    Ok(Version { numbers, pre })
}

/// Orders two pre-release tags: by name, then by the number that follows (`rc2` < `rc10`).
fn compare_pre(a: &str, b: &str) -> Ordering {
    let split = |s: &str| {
        let i = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
        let n: u64 = s[i..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        (s[..i].trim_end_matches('.').to_string(), n)
    };
    split(a).cmp(&split(b))
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.numbers.len().max(other.numbers.len());
        for i in 0..n {
            let a = self.numbers.get(i).copied().unwrap_or(0);
            let b = other.numbers.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            // A pre-release comes before its release.
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => compare_pre(a, b),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two versions in any of the vendors' forms.
pub fn compare(a: &str, b: &str) -> Result<Ordering, String> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn every_vendor_form_compares() {
        let table: &[(&str, &str, Ordering)] = &[
            ("v2.0.10", "2.0.9", Greater),
            ("V3.00.1", "3.0.1", Equal),
            ("2.00.7.4 2022.12.08", "2.00.7.4", Equal),
            ("2.00.7.4 2022.12.08", "2.00.10", Less),
            ("3.00.0 2024.03.31 LINUX x86_64", "2.00.12", Greater),
            ("4.2.1.8_108000022024072217", "4.2.1.8", Equal),
            (
                "4.2.1.8_108000022024072217",
                "4.2.1.10_100000012024010101",
                Less,
            ),
            ("4.2.1.2-ce", "4.2.1.2", Equal),
            ("openmldb version 0.9.2-1a2b3c4", "0.9.2", Equal),
            ("0.9.2", "0.10.0", Less),
            ("2.00.8", "2.0.8.0", Equal),
            ("2.0.10-rc1", "2.0.10", Less),
            ("2.0.10-rc1", "2.0.9", Greater),
            ("2.0.10-rc2", "2.0.10-rc10", Less),
            ("2.0.10-beta1", "2.0.10-rc1", Less),
            ("4.3.0.0", "4.2.5.1", Greater),
        ];
        for (a, b, want) in table {
            assert_eq!(compare(a, b).unwrap(), *want, "{a} vs {b}");
            assert_eq!(compare(b, a).unwrap(), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn what_is_not_a_version_says_so() {
        assert!(compare("", "1.0")
            .unwrap_err()
            .contains("no version number"));
        assert!(compare("latest", "1.0")
            .unwrap_err()
            .contains("no version number in `latest`"));
        assert!(compare("1.x.2", "1.0")
            .unwrap_err()
            .contains("`x` is not a number"));
        assert_eq!(parse("v4.2").unwrap().numbers, vec![4, 2]);
    }
}
