//! The one reader of the `key=VALUE` lines guests print (checks, benchmark samples,
//! `/status` pages), with one rule: the value of the **last** line that reads
//! `key=VALUE` (blanks around the line and the value ignored) and whose value parses.
//! A report printed again supersedes the earlier one; a key printed once reads the
//! same under any rule.

use std::str::FromStr;

/// The value of the last line of `output` that reads `key=VALUE` with a `VALUE` that
/// parses as `T`.
pub fn last<T: FromStr>(output: &str, key: &str) -> Option<T> {
    output.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix(key)?
            .strip_prefix('=')?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_whole_key_wins() {
        assert_eq!(last::<u64>("a=1\n  a=2 \nab=3\n", "a"), Some(2));
        assert_eq!(last::<u64>("ab=3\n", "a"), None);
        assert_eq!(last::<u64>("a=x\na=4\na=y\n", "a"), Some(4));
        assert_eq!(last::<u64>("", "a"), None);
        assert_eq!(last::<f64>("rate=1.5\n", "rate"), Some(1.5));
        assert_eq!(
            last::<String>("checksum=0xab\n", "checksum").as_deref(),
            Some("0xab")
        );
        // A key inside a longer line is not a `key=VALUE` line.
        assert_eq!(last::<u64>("x a=1\n", "a"), None);
        assert_eq!(last::<u64>("a=1 b=2\n", "a"), None);
    }

    #[test]
    fn hostile_output_is_just_absent() {
        assert_eq!(
            last::<u64>("a=\na==\na=-1\na=99999999999999999999999\n", "a"),
            None
        );
        assert_eq!(last::<u64>("=\n=1\n\u{0}a=1\n", "a"), None);
        assert_eq!(last::<u64>("\u{feff}a=\u{0}\n", ""), None);
    }
}
