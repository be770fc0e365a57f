//! Counts: whole numbers with bounds.

use crate::error::{Problem, SettingError};

/// The bounds of a count setting (both included).
///
/// A count is written with ASCII digits only, white space around it
/// ignored: `"4"`. No sign, no fraction, no separators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRule {
    /// The smallest accepted value.
    pub min: usize,
    /// The largest accepted value.
    pub max: usize,
}

impl CountRule {
    /// Worker threads of the multi-threaded Tokio scheduler: 1 to 1024.
    ///
    /// Tokio refuses zero (it panics). The largest machines have a few
    /// hundred hardware threads; more than 1024 workers is a typo (`40000`
    /// for `4`) that would reserve a stack per thread for nothing.
    pub const WORKER_THREADS: CountRule = CountRule { min: 1, max: 1024 };

    /// Older generations draining at once: 1 to 16.
    ///
    /// At least one, or a restart would cut its predecessor's work at once;
    /// each draining generation is a process holding its connections' memory,
    /// so more than 16 is a typo rather than a plan.
    pub const DRAINING: CountRule = CountRule { min: 1, max: 16 };

    /// Parses `text` for `setting`.
    ///
    /// ```
    /// use shellflip_settings::CountRule;
    ///
    /// assert_eq!(CountRule::WORKER_THREADS.parse("threads", " 4 "), Ok(4));
    /// assert!(CountRule::WORKER_THREADS.parse("threads", "0").is_err());
    /// ```
    pub fn parse(&self, setting: &str, text: &str) -> Result<usize, SettingError> {
        let error = |problem| SettingError::new(setting, text, problem);
        let digits = text.trim();
        if digits.is_empty() {
            return Err(error(Problem::Empty { example: "4" }));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error(Problem::NotACount));
        }
        // All digits: the only way to fail is to be too large for a usize.
        let value = digits
            .parse::<usize>()
            .map_err(|_| error(self.out_of_range()))?;
        self.check(setting, value)
    }

    /// Checks a count given in code (say `Config::worker_threads`).
    pub fn check(&self, setting: &str, value: usize) -> Result<usize, SettingError> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(SettingError::new(
                setting,
                value.to_string(),
                self.out_of_range(),
            ))
        }
    }

    /// What the rule accepts, for the settings table: `1 to 1024`.
    pub fn describe(&self) -> String {
        format!("{} to {}", self.min, self.max)
    }

    fn out_of_range(&self) -> Problem {
        Problem::OutOfRange {
            min: self.min,
            max: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: CountRule = CountRule::WORKER_THREADS;

    fn problem(text: &str) -> Problem {
        W.parse("w", text).unwrap_err().problem().clone()
    }

    #[test]
    fn bounds() {
        assert_eq!(W.parse("w", "1"), Ok(1));
        assert_eq!(W.parse("w", "1024"), Ok(1024));
        assert_eq!(W.parse("w", "\t16\n"), Ok(16));
        assert_eq!(W.parse("w", "0004"), Ok(4));
        let range = Problem::OutOfRange { min: 1, max: 1024 };
        assert_eq!(problem("0"), range);
        assert_eq!(problem("1025"), range);
        assert_eq!(problem("40000"), range);
        assert_eq!(problem("99999999999999999999999999999"), range);
        assert_eq!(W.check("w", 0).unwrap_err().problem(), &range);
        assert_eq!(W.check("w", usize::MAX).unwrap_err().problem(), &range);
        assert_eq!(W.check("w", 8), Ok(8));
    }

    #[test]
    fn only_digits() {
        assert_eq!(problem(""), Problem::Empty { example: "4" });
        for text in ["-1", "+4", "4.0", "four", "4 threads", "1_000", "0x10"] {
            assert_eq!(problem(text), Problem::NotACount, "{text}");
        }
    }

    #[test]
    fn messages_name_the_setting_value_and_range() {
        let e = W.parse("SHELLFLIP_WORKER_THREADS", "0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"0\" for SHELLFLIP_WORKER_THREADS: out of range: give a whole number from 1 to 1024, e.g. 4"
        );
        assert_eq!(W.describe(), "1 to 1024");
    }
}
