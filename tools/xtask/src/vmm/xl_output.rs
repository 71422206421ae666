//! Splitting the console output of an xl run (several domains booted one after another
//! by the test bed's Linux dom0) into each domain's part.
//!
//! The dom0 init frames each domain's part with `xen-testbed: domain NAME begins` and
//! `xen-testbed: domain NAME exit status N`. Lines of Xen and dom0 Linux that appear
//! while a domain runs stay in its part (checks look for the app's lines); lines
//! outside every frame (the boot of Xen and dom0) belong to no domain.

/// The prefix of the test bed's own console lines.
const SAY: &str = "xen-testbed: domain ";

/// One domain's part of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainOutput {
    /// Its lines, from its `begins` line to its `exit status` line (both included), or
    /// to the end of the output if the run ended before the domain did.
    pub output: String,
    /// N from its `exit status N` line; `None` if that line never came (QEMU died or
    /// was killed), or if the domain never began (then `output` is empty).
    pub status: Option<i32>,
    /// Whether its `begins` line appeared.
    pub began: bool,
}

/// Splits `output` into the parts of the domains `names` (in any order; the result
/// follows `names`).
pub fn split(output: &str, names: &[String]) -> Vec<DomainOutput> {
    let mut parts: Vec<DomainOutput> = names
        .iter()
        .map(|_| DomainOutput {
            output: String::new(),
            status: None,
            began: false,
        })
        .collect();
    // The domain whose frame is open.
    let mut open: Option<usize> = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix(SAY)
            && let Some(k) = names.iter().position(|n| rest == format!("{n} begins"))
        {
            parts[k].began = true;
            open = Some(k);
        }
        let Some(k) = open else { continue };
        parts[k].output.push_str(line);
        parts[k].output.push('\n');
        let status = line
            .strip_prefix(SAY)
            .and_then(|rest| rest.strip_prefix(names[k].as_str()))
            .and_then(|rest| rest.strip_prefix(" exit status "))
            .and_then(|n| n.trim().parse::<i32>().ok());
        if status.is_some() {
            parts[k].status = status;
            open = None;
        }
    }
    parts
}

/// `(xl create, first console output)` in seconds of dom0's `EPOCHREALTIME`, from a
/// domain's `xen-testbed: domain NAME timing: …` line.
pub fn timing(part: &str) -> Option<(f64, f64)> {
    part.lines().find_map(|l| {
        let rest = l.strip_prefix(SAY)?.split_once(" timing: xl create at ")?.1;
        let (created, first) = rest.split_once(", first console output at ")?;
        Some((created.trim().parse().ok()?, first.trim().parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_frames_and_keeps_interleaved_lines() {
        let out = "(XEN) boot\n\
                   xen-testbed: domain hello-1 begins\n\
                   Hello\n\
                   (XEN) chatter\n\
                   xen-testbed: domain hello-1 exit status 0\n\
                   between\n\
                   xen-testbed: domain crash-2 begins\n\
                   panicked\n\
                   xen-testbed: domain crash-2 exit status 101\n\
                   xen-testbed: exit status 101\n";
        let p = split(out, &names(&["hello-1", "crash-2"]));
        assert_eq!(p[0].status, Some(0));
        assert_eq!(
            p[0].output,
            "xen-testbed: domain hello-1 begins\nHello\n(XEN) chatter\n\
             xen-testbed: domain hello-1 exit status 0\n"
        );
        assert_eq!(p[1].status, Some(101));
        assert!(p[1].output.contains("panicked") && !p[1].output.contains("Hello"));
        assert!(!p[0].output.contains("between") && !p[1].output.contains("between"));
    }

    #[test]
    fn a_cut_off_run_leaves_the_rest_without_status() {
        let out = "xen-testbed: domain a-1 begins\nA\nxen-testbed: domain a-1 exit status 125\n\
                   xen-testbed: domain b-2 begins\nB, then QEMU was killed";
        let p = split(out, &names(&["a-1", "b-2", "c-3"]));
        assert_eq!((p[0].status, p[0].began), (Some(125), true));
        assert_eq!((p[1].status, p[1].began), (None, true));
        assert!(p[1].output.ends_with("B, then QEMU was killed\n"));
        assert_eq!(
            p[2],
            DomainOutput {
                output: String::new(),
                status: None,
                began: false
            }
        );
    }

    #[test]
    fn names_that_prefix_others_do_not_match() {
        // `hello-1` must not take the lines of `hello-10`.
        let out = "xen-testbed: domain hello-10 begins\nten\n\
                   xen-testbed: domain hello-10 exit status 3\n";
        let p = split(out, &names(&["hello-1", "hello-10"]));
        assert!(!p[0].began);
        assert_eq!(p[1].status, Some(3));
        // An app printing a fake frame line of another name does not end its own frame.
        let out = "xen-testbed: domain a-1 begins\nxen-testbed: domain b-2 exit status 0\n\
                   xen-testbed: domain a-1 exit status 7\n";
        let p = split(out, &names(&["a-1", "b-2"]));
        assert_eq!((p[0].status, p[1].status), (Some(7), None));
    }

    #[test]
    fn reads_timing_lines() {
        let part = "xen-testbed: domain h timing: xl create at 12.500000, first console output at 13.250125\n";
        assert_eq!(timing(part), Some((12.5, 13.250125)));
        assert_eq!(timing("xen-testbed: domain h exit status 0"), None);
    }
}
