//! A child process killed with every worker it forked when its handle drops, and nothing
//! outlives the test — not even a test binary that is killed.
//!
//! The program runs under a small `sh` guard in a new process group: the guard reports the
//! program's pid, waits for it (so its exit status is the guard's), and kills everything as soon
//! as its stdin — a pipe whose only writer is this process — reaches EOF. Drop never runs when a
//! test binary is SIGKILLed or times out; the kernel closing that pipe still does the job.
//! php-fpm and php-cgi both call `setsid()`, leaving the guard's group for one of their own whose
//! id is the program's pid, so "everything" is both groups.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

/// dash's `kill` builtin takes no `--` and stops at the first malformed argument, but goes on
/// past pids that do not exist (the program's group does not exist until it calls setsid).
const GUARD_SCRIPT: &str = r#"output=$1; shift
exec 3<&0
"$@" 3<&- </dev/null >"$output" 2>&1 &
program=$!
echo "$program"
( read -r _ <&3; kill -KILL "-$program" "$program" 0 ) >/dev/null 2>&1 &
exec 3<&-
wait "$program""#;

/// A program and everything it forks, killed when this is dropped.
pub struct ProcessGroup {
    guard: Child,
    // Held only to be closed: its EOF is what tells the guard to kill the group.
    _lifeline: Option<ChildStdin>,
    program_pid: u32,
    program: String,
}

impl ProcessGroup {
    /// Runs `command` (program, arguments, environment and working directory are used; its
    /// stdio is not) with stdout and stderr going to the file `output`.
    pub fn spawn(command: &Command, output: &Path) -> ProcessGroup {
        use std::os::unix::process::CommandExt;
        let program = command.get_program().to_string_lossy().into_owned();
        let mut guard = Command::new("sh");
        guard
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("sh")
            .arg(output)
            .arg(command.get_program())
            .args(command.get_args())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => guard.env(name, value),
                None => guard.env_remove(name),
            };
        }
        if let Some(directory) = command.get_current_dir() {
            guard.current_dir(directory);
        }
        let mut guard = guard
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
        let mut pid_line = String::new();
        if let Some(stdout) = guard.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut pid_line);
        }
        let program_pid = pid_line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{program} did not start (guard said {pid_line:?})"));
        ProcessGroup {
            _lifeline: guard.stdin.take(),
            guard,
            program_pid,
            program,
        }
    }

    /// The program's pid (not the guard's).
    pub fn pid(&self) -> u32 {
        self.program_pid
    }

    /// Sends `signal` to the program only (php-fpm's master handles reloads and stops itself).
    pub fn signal(&self, signal: i32) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.program_pid.to_string())
            .status()
            .unwrap_or_else(|error| panic!("cannot run kill: {error}"));
        assert!(
            status.success(),
            "kill -{signal} {} ({}) failed: {status}",
            self.program_pid,
            self.program
        );
    }

    /// The program's exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.guard.try_wait().ok().flatten()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // Negative pids name groups: the program's own (after its setsid) holds every worker,
        // even those orphaned by a test that SIGKILLed the master; the guard's holds the rest.
        let _ = Command::new("kill")
            .args(["-KILL", "--"])
            .arg(format!("-{}", self.program_pid))
            .arg(self.program_pid.to_string())
            .arg(format!("-{}", self.guard.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.guard.wait();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Alive and not a zombie (pid 1 in a container may never reap what it inherits).
    fn is_running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some(state != "Z")
            })
            .unwrap_or(false)
    }

    /// Waits for another process to die: there is no event to await, only its /proc entry.
    fn wait_until_gone(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !is_running(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn spawn_in_new_session(output: &Path) -> ProcessGroup {
        // setsid(1) puts `sleep` in a session and group of its own, as php-fpm does to itself.
        let mut command = Command::new("setsid");
        command.args(["sleep", "60"]);
        ProcessGroup::spawn(&command, output)
    }

    #[test]
    fn the_guard_kills_the_program_when_this_process_goes_away() {
        let directory = tempfile::tempdir().unwrap();
        let mut group = spawn_in_new_session(&directory.path().join("out.log"));
        let pid = group.pid();
        assert!(is_running(pid));
        assert!(group.exit_status().is_none());
        // What the kernel does for a test binary that is killed: close its end of the pipe.
        drop(group._lifeline.take());
        assert!(wait_until_gone(pid), "the guard should have killed {pid}");
    }

    #[test]
    fn drop_kills_a_program_that_left_the_group_and_reports_exit_status() {
        let directory = tempfile::tempdir().unwrap();
        let group = spawn_in_new_session(&directory.path().join("out.log"));
        let pid = group.pid();
        drop(group);
        assert!(wait_until_gone(pid));

        let mut command = Command::new("sh");
        command.args(["-c", "echo to the log; exit 3"]);
        let output = directory.path().join("exit.log");
        let mut group = ProcessGroup::spawn(&command, &output);
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = group.exit_status() {
                break status;
            }
            assert!(Instant::now() < deadline, "sh did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(std::fs::read_to_string(output).unwrap(), "to the log\n");
    }
}
