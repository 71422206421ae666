//! The application's arguments.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

/// The words of the command line that belong to the application (see
/// [`crate::cmdline`] for which words libos keeps for itself).
#[derive(Debug, Clone, Default)]
pub struct Args {
    words: Vec<String>,
}

impl Args {
    /// Wraps the application's words.
    pub fn new(words: Vec<String>) -> Self {
        Args { words }
    }

    /// The number of arguments.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The `i`-th argument.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }

    /// All arguments in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.words.iter().map(String::as_str)
    }
}
