//! How the image builder reports progress: the step it is on and each output line of its tools.

/// Receives progress from [`super::build`]. Calls arrive on the building thread, in order:
/// `step`, any number of `line`s, then `done` with a one-line summary of that step.
pub trait BuildProgress {
    /// A step starts, e.g. "kernel" or "rootfs minimal: debootstrap".
    fn step(&mut self, name: &str);
    /// One line of output from the running tool, or a status line from the builder.
    fn line(&mut self, text: &str);
    /// The current step finished; `summary` says what was built or reused.
    fn done(&mut self, summary: &str);
}

/// Progress sink that logs steps with `tracing` and drops tool output, for non-interactive use.
#[derive(Debug, Default)]
pub struct LogProgress {
    step: String,
}

impl BuildProgress for LogProgress {
    fn step(&mut self, name: &str) {
        name.clone_into(&mut self.step);
        tracing::info!(step = name, "image build step started");
    }

    fn line(&mut self, text: &str) {
        tracing::trace!(step = %self.step, "{text}");
    }

    fn done(&mut self, summary: &str) {
        tracing::info!(step = %self.step, "{summary}");
    }
}

#[cfg(test)]
pub mod fakes {
    //! A progress sink that records everything, for tests.

    use super::BuildProgress;

    #[derive(Debug, Default)]
    pub struct RecordingProgress {
        pub steps: Vec<String>,
        pub lines: Vec<String>,
        pub done: Vec<String>,
    }

    impl BuildProgress for RecordingProgress {
        fn step(&mut self, name: &str) {
            self.steps.push(name.to_owned());
        }

        fn line(&mut self, text: &str) {
            self.lines.push(text.to_owned());
        }

        fn done(&mut self, summary: &str) {
            self.done.push(summary.to_owned());
        }
    }
}
